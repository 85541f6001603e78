//! Compiles against aya (0.13 and 0.14: `EbpfLoader::btf` takes `Option<&Btf>`): the BTF the
//! generated module chose, into the loader, as a user writes it.

mod btfgen;

fn load(object: &[u8]) -> Result<aya::Ebpf, Box<dyn std::error::Error>> {
    let found = btfgen::find_btf(btfgen::Options::default())?;
    eprintln!("btf: {}", found.source);
    let btf = btfgen::aya_btf!(found)?;
    let mut loader = aya::EbpfLoader::new();
    // Only a Some: btf(None) would turn off CO-RE against the kernel's own BTF.
    if let Some(btf) = &btf {
        loader.btf(Some(btf));
    }
    Ok(loader.load(object)?)
}

fn main() {
    let object = std::fs::read(std::env::args().nth(1).unwrap_or_default()).unwrap_or_default();
    if let Err(e) = load(&object) {
        eprintln!("error: {e}");
    }
}
