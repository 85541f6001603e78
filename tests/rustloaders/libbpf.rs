//! Compiles against libbpf-rs (0.26 and later: `ObjectBuilder::btf_custom_path`): the BTF the
//! generated module chose, as the path libbpf reads, kept until the object is loaded.

mod btfgen;

fn load(path: &str) -> Result<libbpf_rs::Object, Box<dyn std::error::Error>> {
    let found = btfgen::find_btf(btfgen::Options::default())?;
    eprintln!("btf: {}", found.source);
    let file = btfgen::btf_custom_path(&found)?;
    let mut builder = libbpf_rs::ObjectBuilder::default();
    if let Some(file) = &file {
        builder.btf_custom_path(file.path())?;
    }
    let object = builder.open_file(path)?.load()?;
    drop(file); // libbpf has read it: the private copy goes
    Ok(object)
}

fn main() {
    if let Err(e) = load(&std::env::args().nth(1).unwrap_or_default()) {
        eprintln!("error: {e}");
    }
}
