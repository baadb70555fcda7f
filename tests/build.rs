//! Builds every test guest in `guests/<name>/` (C and GNU as sources, linked with the shared
//! library in `guests/lib/`) into the image formats the guest lists in its `formats` file, under
//! `$OUT_DIR/guests/`. `src/lib.rs` finds them through the generated `guests.rs` table.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Image formats a guest may declare, with the linker script, the extra objects and the file
/// name suffix of each.
const FORMATS: &[(&str, &str, &[&str], &str)] = &[
    ("bzimage", "bzimage.ld", &["bzimage_setup.S"], "bzImage"),
    ("pvh", "pvh.ld", &["pvh_note.S"], "pvh.elf"),
    ("elf64", "elf64.ld", &[], "elf"),
    (
        "bzimage-reloc",
        "bzimage-reloc.ld",
        &["bzimage_setup.S"],
        "reloc.bzImage",
    ),
];

/// Library sources that only some formats link.
const FORMAT_ONLY: &[&str] = &["bzimage_setup.S", "pvh_note.S"];

const CFLAGS: &[&str] = &[
    "-m64",
    "-march=x86-64",
    "-std=gnu11",
    "-O2",
    "-ffreestanding",
    "-fno-builtin",
    "-nostdinc",
    "-fno-pic",
    "-fno-pie",
    "-mcmodel=small",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fcf-protection=none",
    "-fno-tree-loop-distribute-patterns",
    // Guests read fixed low addresses (BDA, ACPI area); not null-pointer bugs.
    "--param=min-pagesize=0",
    "-Wall",
    "-Wextra",
    "-Werror",
];

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (install gcc/binutils: scripts/setup.sh)")
    });
    if !out.status.success() {
        panic!(
            "guest build step failed: {cmd:?}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Source files (`.c`, `.S`) directly in `dir`, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("c") | Some("S")
            )
        })
        .collect();
    v.sort();
    v
}

fn compile(src: &Path, obj_dir: &Path, lib_dir: &Path) -> PathBuf {
    let stem = src.file_name().and_then(|s| s.to_str()).unwrap_or("src");
    let obj = obj_dir.join(format!("{stem}.o"));
    run(Command::new("gcc")
        .args(CFLAGS)
        .arg("-I")
        .arg(lib_dir)
        .arg("-I")
        .arg(src.parent().unwrap_or(lib_dir))
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(&obj));
    obj
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let guests_dir = manifest.join("guests");
    let lib_dir = guests_dir.join("lib");
    println!("cargo:rerun-if-changed={}", guests_dir.display());

    let obj_root = out.join("obj");
    let img_dir = out.join("guests");
    fs::create_dir_all(&img_dir).expect("create guest image dir");

    let lib_obj = obj_root.join("lib");
    fs::create_dir_all(&lib_obj).expect("create obj dir");
    let mut common = Vec::new();
    let mut format_objs = std::collections::HashMap::new();
    for src in sources(&lib_dir) {
        let name = src
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        let obj = compile(&src, &lib_obj, &lib_dir);
        if FORMAT_ONLY.contains(&name.as_str()) {
            format_objs.insert(name, obj);
        } else {
            common.push(obj);
        }
    }

    let mut table = String::from("/// Built guests: (name, formats in declared order).\n");
    table.push_str("pub const GUESTS: &[(&str, &[&str])] = &[\n");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&guests_dir)
        .expect("read tests/guests")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.join("formats").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        let formats_text = fs::read_to_string(dir.join("formats")).expect("read formats");
        let formats: Vec<&str> = formats_text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(str::split_whitespace)
            .collect();
        if formats.is_empty() {
            panic!(
                "{}: `formats` lists no image format (use: bzimage pvh elf64 bzimage-reloc)",
                dir.display()
            );
        }
        let obj_dir = obj_root.join(&name);
        fs::create_dir_all(&obj_dir).expect("create obj dir");
        let objs: Vec<PathBuf> = sources(&dir)
            .iter()
            .map(|s| compile(s, &obj_dir, &lib_dir))
            .collect();
        for fmt in &formats {
            let Some((_, script, extra, suffix)) = FORMATS.iter().find(|f| f.0 == *fmt) else {
                panic!(
                    "{}: unknown image format `{fmt}` (known: bzimage pvh elf64 bzimage-reloc)",
                    dir.display()
                );
            };
            let elf = obj_dir.join(format!("{name}.{fmt}.elf"));
            let mut ld = Command::new("ld");
            ld.args([
                "-m",
                "elf_x86_64",
                "-static",
                "-nostdlib",
                "--build-id=none",
            ])
            .args([
                "--no-warn-rwx-segments",
                "-z",
                "noexecstack",
                "-z",
                "max-page-size=4096",
            ])
            .arg("-L")
            .arg(&lib_dir)
            .arg("-T")
            .arg(lib_dir.join(script))
            .arg("-o")
            .arg(&elf)
            .args(&objs)
            .args(&common);
            for x in *extra {
                ld.arg(&format_objs[*x]);
            }
            run(&mut ld);
            let image = img_dir.join(format!("{name}.{suffix}"));
            if fmt.starts_with("bzimage") {
                run(Command::new("objcopy")
                    .args(["-O", "binary"])
                    .arg(&elf)
                    .arg(&image));
            } else {
                fs::copy(&elf, &image).expect("copy guest image");
            }
        }
        let list: Vec<String> = formats.iter().map(|f| format!("{f:?}")).collect();
        table.push_str(&format!("    ({name:?}, &[{}]),\n", list.join(", ")));
    }
    table.push_str("];\n");
    fs::write(out.join("guests.rs"), table).expect("write guests.rs");
}
