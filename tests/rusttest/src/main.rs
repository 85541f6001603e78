//! Drives the generated btfgen.rs for tests/test_rust_runtime.py, the twin of the C runtime's
//! tests/ctest/harness.c:
//!
//! - `lookup PAYLOAD|embedded CASES`: each case (three u32-length-prefixed fields: os-release
//!   text, machine, release) through the lookup, one line each:
//!   `ok\tKEY\tVIA\tLEN\tCRC32` or `err\tKIND\tMESSAGE`;
//! - `find [ignore-native]`: find_btf with the kernel's files from $HARNESS_NATIVE_PATH and
//!   $HARNESS_RELEASE_FILE, then btf_custom_path; prints key=value lines;
//! - `corrupt PAYLOAD`: every truncation and many byte flips of a payload through the reader,
//!   which must return (an error or the entries), never panic;
//! - `dump PAYLOAD`: every entry's BTF, one line each: `ok\tKEY\tHEX` or `err\tKEY\tMESSAGE`;
//!   a payload that does not parse is one line `err\t-\tMESSAGE`.

mod btfgen;

use std::io::Write;
use std::path::Path;

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn fields(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 4 <= data.len() {
        let n = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 4;
        out.push(String::from_utf8_lossy(&data[pos..pos + n]).into_owned());
        pos += n;
    }
    out
}

fn lookup(payload: &str, cases: &str) {
    let payload = (payload != "embedded").then(|| std::fs::read(payload).unwrap());
    let cases = fields(&std::fs::read(cases).unwrap());
    let mut out = std::io::stdout().lock();
    for case in cases.chunks(3) {
        let (osr, machine, release) = (&case[0], &case[1], &case[2]);
        let result = match &payload {
            Some(p) => btfgen::lookup_in(p, osr, machine, release),
            None => btfgen::lookup_btf(osr, machine, release).map(|(key, bytes)| {
                // The public API does not say how; the rule is checked through lookup_in.
                (key, "-", bytes)
            }),
        };
        match result {
            Ok((key, via, bytes)) => {
                writeln!(out, "ok\t{key}\t{via}\t{}\t{}", bytes.len(), crc32(&bytes)).unwrap()
            }
            Err(e) => writeln!(out, "err\t{}\t{e}", e.kind()).unwrap(),
        }
    }
}

fn find(ignore_native: bool) {
    let native = std::env::var("HARNESS_NATIVE_PATH").unwrap();
    let release = std::env::var("HARNESS_RELEASE_FILE").unwrap();
    let opts = btfgen::Options { ignore_native };
    match btfgen::find_btf_at(opts, Path::new(&native), Path::new(&release)) {
        Ok(found) => {
            println!("rc=0");
            println!("source={}", found.source);
            let bytes = found.bytes.as_deref().unwrap_or_default();
            println!("size={}", bytes.len());
            println!("crc={}", crc32(bytes));
            match btfgen::btf_custom_path(&found) {
                Ok(Some(file)) => {
                    use std::os::unix::fs::PermissionsExt;
                    let path = file.path().to_path_buf();
                    let meta = std::fs::metadata(&path).unwrap();
                    println!("path={}", path.display());
                    println!("mode={:04o}", meta.permissions().mode() & 0o777);
                    println!("file_matches={}", std::fs::read(&path).unwrap() == bytes);
                    drop(file);
                    println!("exists_after_drop={}", path.exists());
                }
                Ok(None) => println!("path="),
                Err(e) => {
                    println!("path=");
                    eprintln!("btfgen: {e}");
                }
            }
        }
        Err(e) => {
            println!("rc=1");
            println!("kind={}", e.kind());
            eprintln!("btfgen: {e}");
        }
    }
}

/// A small deterministic generator: the same flips on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn corrupt(payload: &str) {
    let payload = std::fs::read(payload).unwrap();
    let good = btfgen::check_payload(&payload).expect("the undamaged payload reads");
    let (mut errors, mut ok) = (0usize, 0usize);
    let mut tally = |r: Result<usize, btfgen::BtfError>| match r {
        Ok(_) => ok += 1,
        Err(_) => errors += 1,
    };
    for len in 0..payload.len() {
        tally(btfgen::check_payload(&payload[..len]));
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let mut damaged = payload.clone();
        for _ in 0..=(rng.next() % 3) {
            let at = (rng.next() % damaged.len() as u64) as usize;
            damaged[at] ^= 1 << (rng.next() % 8);
        }
        tally(btfgen::check_payload(&damaged));
    }
    for at in 0..payload.len() {
        for value in [0x00, 0xff] {
            let mut damaged = payload.clone();
            damaged[at] = value;
            tally(btfgen::check_payload(&damaged));
        }
    }
    println!("survived: {good} entries; {errors} damaged payloads rejected, {ok} read");
}

fn dump(payload: &str) {
    let payload = std::fs::read(payload).unwrap();
    let mut out = std::io::stdout().lock();
    match btfgen::dump_payload(&payload) {
        Err(e) => writeln!(out, "err\t-\t{e}").unwrap(),
        Ok(entries) => {
            for (key, result) in entries {
                match result {
                    Ok(bytes) => {
                        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                        writeln!(out, "ok\t{key}\t{hex}").unwrap()
                    }
                    Err(e) => writeln!(out, "err\t{key}\t{e}").unwrap(),
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("lookup") => lookup(&args[1], &args[2]),
        Some("find") => find(args.get(1).map(String::as_str) == Some("ignore-native")),
        Some("corrupt") => corrupt(&args[1]),
        Some("dump") => dump(&args[1]),
        _ => {
            eprintln!("usage: harness lookup PAYLOAD|embedded CASES | find [ignore-native] | corrupt PAYLOAD | dump PAYLOAD");
            std::process::exit(2);
        }
    }
}
