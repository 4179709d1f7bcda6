//! ELF facts about one binary mapped into the target: where it was loaded, its sections and
//! its symbols, with every address already translated into the target's address space.
//!
//! The file is read through [`Process::open_mapped_file`], so it is the very file the target
//! mapped, even inside a container or after the file on disk was replaced.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use goblin::container::Ctx;
use goblin::elf::header::ET_EXEC;
use goblin::elf::program_header::{ProgramHeader, PT_LOAD};
use goblin::elf::section_header::{SectionHeader, SHF_ALLOC, SHT_DYNSYM, SHT_NOBITS, SHT_SYMTAB};
use goblin::elf::sym::{Symtab, STB_LOCAL, STT_TLS};
use goblin::elf::Elf;
use memmap2::Mmap;

use crate::process::{MapRange, Process};

/// Most strings [`Binary::rodata_strings`] returns, so a loose predicate cannot blow up.
const MAX_RODATA_STRINGS: usize = 64;

/// A section of a binary, with its address in the target's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Section name (`.data`, `.bss`, `.PyRuntime`, ...).
    pub name: String,
    /// Address of its first byte in the target.
    pub addr: u64,
    /// Size in bytes (in memory; `.bss` has no bytes in the file).
    pub size: u64,
}

/// The memory map we were given has no mapping of the binary: the process was met in the
/// middle of an `execve` (its `exe` and its map can name different programs), or it was
/// asked for a file it does not map.
#[derive(Debug)]
pub struct NotMapped {
    /// The binary.
    pub path: PathBuf,
    /// The process whose map lacks it.
    pub pid: i32,
}

impl fmt::Display for NotMapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not mapped in process {}",
            self.path.display(),
            self.pid
        )
    }
}

impl std::error::Error for NotMapped {}

/// What we know about one ELF file mapped into the target.
pub struct Binary {
    /// Path as shown in the target's maps.
    pub path: PathBuf,
    /// Difference between addresses in the target and the ELF's virtual addresses.
    pub load_bias: u64,
    /// Sections (.data, .bss, .PyRuntime, .rodata ...) relocated into the target. Only
    /// sections that occupy memory at run time (`SHF_ALLOC`) are listed.
    pub sections: Vec<Section>,
    /// Where `.dynsym` and `.symtab` are in the file. They are searched when a symbol is
    /// asked for, not turned into a map up front: an attach asks for a handful of names,
    /// and building a map of libpython's ~15,000 symbols was most of the time `dump` took.
    symbol_tables: Vec<SymbolTable>,
    /// How the file's structures are encoded (32/64-bit, endianness).
    ctx: Ctx,
    /// The file, kept mapped for the symbol tables and [`Binary::rodata_strings`].
    file: Mmap,
    /// Byte range of `.rodata` in the file, if it has one.
    rodata: Option<(usize, usize)>,
}

impl fmt::Debug for Binary {
    // Hand-written so that printing a binary does not dump ten thousand symbols.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binary")
            .field("path", &self.path)
            .field("load_bias", &format_args!("{:#x}", self.load_bias))
            .field("sections", &self.sections.len())
            .field(
                "symbols",
                &self.symbol_tables.iter().map(|t| t.count).sum::<usize>(),
            )
            .finish()
    }
}

impl Binary {
    /// Loads the ELF file mapped at `path` in the target. `maps` is the target's memory map;
    /// the lowest mapping of `path` gives the load address. The file is opened through
    /// [`Process::open_mapped_file`], memory-mapped and parsed with goblin.
    pub fn load(process: &dyn Process, maps: &[MapRange], path: &Path) -> Result<Binary> {
        let mut mine: Vec<&MapRange> = maps
            .iter()
            .filter(|m| m.path.as_deref() == Some(path))
            .collect();
        mine.sort_by_key(|m| m.start);
        let Some(first) = mine.first() else {
            bail!(NotMapped {
                path: path.to_path_buf(),
                pid: process.pid(),
            });
        };
        let file = process
            .open_mapped_file(first)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the mapping is read-only and private. If someone truncates the file while
        // we hold it, reads could fault; binaries in use are replaced, not rewritten, in
        // practice, and map_files gives us the inode the target itself maps.
        let bytes = unsafe { Mmap::map(&file) }
            .with_context(|| format!("memory-mapping {}", path.display()))?;
        // Only the headers are parsed: relocations, notes and the dynamic section, which a
        // full `Elf::parse` also decodes, are never used.
        let parsed = (|| -> goblin::error::Result<_> {
            let header = Elf::parse_header(&bytes)?;
            let ctx = Ctx::new(header.container()?, header.endianness()?);
            let programs = ProgramHeader::parse(
                &bytes,
                header.e_phoff as usize,
                header.e_phnum as usize,
                ctx,
            )?;
            let section_headers = SectionHeader::parse(
                &bytes,
                header.e_shoff as usize,
                header.e_shnum as usize,
                ctx,
            )?;
            Ok((header, ctx, programs, section_headers))
        })();
        let (header, ctx, programs, section_headers) =
            parsed.with_context(|| format!("parsing ELF {}", path.display()))?;
        let load_bias = load_bias(header.e_type, &programs, &mine)
            .with_context(|| format!("finding where {} was loaded", path.display()))?;
        let section_names = section_headers
            .get(usize::from(header.e_shstrndx))
            .map(|sh| file_range(sh, bytes.len()))
            .unwrap_or((0, 0));

        let mut sections = Vec::new();
        let mut rodata = None;
        let mut symbol_tables = Vec::new();
        for sh in &section_headers {
            if sh.sh_type == SHT_SYMTAB || sh.sh_type == SHT_DYNSYM {
                if let Some(strings) = section_headers.get(sh.sh_link as usize) {
                    let entry = goblin::elf::sym::Sym::size(ctx.container);
                    symbol_tables.push(SymbolTable {
                        dynamic: sh.sh_type == SHT_DYNSYM,
                        offset: sh.sh_offset as usize,
                        count: (sh.sh_size as usize) / entry.max(1),
                        strings: file_range(strings, bytes.len()),
                    });
                }
            }
            let name = string_at(&bytes, section_names, sh.sh_name).unwrap_or("");
            if name == ".rodata" && sh.sh_type != SHT_NOBITS {
                let start = sh.sh_offset as usize;
                let end = start.saturating_add(sh.sh_size as usize);
                if end <= bytes.len() {
                    rodata = Some((start, end));
                }
            }
            if name.is_empty() || sh.sh_flags & u64::from(SHF_ALLOC) == 0 {
                continue;
            }
            sections.push(Section {
                name: name.to_string(),
                addr: sh.sh_addr.wrapping_add(load_bias),
                size: sh.sh_size,
            });
        }

        // `.dynsym` before `.symtab`, the order in which a later global definition wins.
        symbol_tables.sort_by_key(|t| !t.dynamic);

        Ok(Binary {
            path: path.to_path_buf(),
            load_bias,
            sections,
            symbol_tables,
            ctx,
            file: bytes,
            rodata,
        })
    }

    /// Address in the target of a symbol from `.dynsym` or `.symtab` (both searched, local
    /// symbols included), or `None`.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        if name.is_empty() {
            return None;
        }
        let (mut global, mut local) = (None, None);
        for table in &self.symbol_tables {
            let Ok(symbols) = Symtab::parse(&self.file, table.offset, table.count, self.ctx) else {
                continue;
            };
            for sym in symbols.iter() {
                // Undefined symbols (imports) and TLS offsets are not addresses in this file.
                if sym.st_value == 0 || sym.st_shndx == 0 || sym.st_type() == STT_TLS {
                    continue;
                }
                if !names_match(&self.file, table.strings, sym.st_name, name) {
                    continue;
                }
                let addr = sym.st_value.wrapping_add(self.load_bias);
                // A global definition wins over a same-named local one from another object
                // (the last global one, as the tables are in order); else the first local.
                if sym.st_bind() == STB_LOCAL {
                    local = local.or(Some(addr));
                } else {
                    global = Some(addr);
                }
            }
        }
        global.or(local)
    }

    /// Section by name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// NUL-terminated strings of the `.rodata` section matching `pred`, read from the file
    /// (used to find version strings). Non-UTF-8 pieces are skipped; at most 64 results.
    pub fn rodata_strings(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let Some((start, end)) = self.rodata else {
            return Vec::new();
        };
        let Some(data) = self.file.get(start..end) else {
            return Vec::new();
        };
        data.split(|&b| b == 0)
            .filter(|piece| !piece.is_empty())
            .filter_map(|piece| std::str::from_utf8(piece).ok())
            .filter(|s| pred(s))
            .take(MAX_RODATA_STRINGS)
            .map(str::to_string)
            .collect()
    }
}

/// Load bias of `elf` given its mappings in the target, lowest first: the start of a mapping
/// minus the (page-aligned) virtual address of the `PT_LOAD` segment the kernel mapped there,
/// recognised by its file offset. Non-PIE executables are loaded where they say: bias 0.
/// A symbol table of the file and the string table its names are in.
#[derive(Debug, Clone, Copy)]
struct SymbolTable {
    /// `.dynsym` (else `.symtab`).
    dynamic: bool,
    /// File offset and number of entries.
    offset: usize,
    count: usize,
    /// File byte range of the names.
    strings: (usize, usize),
}

/// The byte range of a section in a file of `len` bytes, clipped to the file.
fn file_range(sh: &SectionHeader, len: usize) -> (usize, usize) {
    let start = (sh.sh_offset as usize).min(len);
    (start, start.saturating_add(sh.sh_size as usize).min(len))
}

/// The NUL-terminated string at `offset` of the string table at `table` in `file`.
fn string_at(file: &[u8], table: (usize, usize), offset: usize) -> Option<&str> {
    let bytes = file.get(table.0..table.1)?.get(offset..)?;
    let end = bytes.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&bytes[..end]).ok()
}

/// Whether the string at `offset` of the string table is exactly `name`, compared in place.
fn names_match(file: &[u8], table: (usize, usize), offset: usize, name: &str) -> bool {
    let Some(bytes) = file.get(table.0..table.1).and_then(|t| t.get(offset..)) else {
        return false;
    };
    let name = name.as_bytes();
    bytes.len() > name.len() && bytes[name.len()] == 0 && &bytes[..name.len()] == name
}

fn load_bias(e_type: u16, programs: &[ProgramHeader], maps: &[&MapRange]) -> Result<u64> {
    if e_type == ET_EXEC {
        return Ok(0);
    }
    let page = page_size();
    for map in maps {
        for ph in programs.iter().filter(|p| p.p_type == PT_LOAD) {
            // The kernel maps a segment from its file offset rounded down to a page, at its
            // virtual address rounded down the same way.
            if ph.p_offset & !(page - 1) == map.offset {
                return Ok(map.start.wrapping_sub(ph.p_vaddr & !(page - 1)));
            }
        }
    }
    bail!("no mapping matches a PT_LOAD segment")
}

/// The system page size (4 KiB unless the kernel says otherwise).
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 && (n as u64).is_power_of_two() {
        n as u64
    } else {
        4096
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::process::LinuxProcess;

    /// A function whose address we know from inside, to check symbol() against.
    #[no_mangle]
    #[inline(never)]
    pub extern "C" fn pyspy_binary_test_marker() -> u32 {
        7
    }

    /// A static variable, to check data addresses too.
    #[no_mangle]
    pub static PYSPY_BINARY_TEST_DATA: [u8; 18] = *b"\0binary-test-data\0";

    #[test]
    fn symbols_and_sections_of_this_test_binary() {
        let me = LinuxProcess::open(std::process::id() as i32).unwrap();
        let maps = me.maps().unwrap();
        let exe = me.exe_path().unwrap();
        let bin = Binary::load(&me, &maps, &exe).unwrap();
        let func = pyspy_binary_test_marker as extern "C" fn() -> u32 as usize as u64;
        assert_eq!(bin.symbol("pyspy_binary_test_marker"), Some(func));
        let data = PYSPY_BINARY_TEST_DATA.as_ptr() as u64;
        assert_eq!(bin.symbol("PYSPY_BINARY_TEST_DATA"), Some(data));
        assert_eq!(bin.symbol("no such symbol anywhere"), None);
        let rodata = bin.section(".rodata").unwrap();
        assert!(rodata.addr <= data && data < rodata.addr + rodata.size);
        let text = bin.section(".text").unwrap();
        assert!(text.addr <= func && func < text.addr + text.size);
        assert!(bin.section(".symtab").is_none(), "not loaded at run time");
        let found = bin.rodata_strings(|s| s == "binary-test-data");
        assert_eq!(found, vec!["binary-test-data".to_string()]);
        assert!(bin.rodata_strings(|_| true).len() <= MAX_RODATA_STRINGS);
    }

    #[test]
    fn unmapped_path_is_an_error() {
        let me = LinuxProcess::open(std::process::id() as i32).unwrap();
        let maps = me.maps().unwrap();
        let err = Binary::load(&me, &maps, Path::new("/nonexistent/lib.so")).unwrap_err();
        assert!(err.to_string().contains("is not mapped"), "{err}");
        assert!(err.downcast_ref::<NotMapped>().is_some(), "{err:?}");
    }
}
