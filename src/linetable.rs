//! Line tables: from an instruction offset to the line `traceback` would report.
//!
//! CPython has used four encodings of "which source line does this bytecode
//! come from" over its history. Each decoder here mirrors the interpreter's own
//! `PyCode_Addr2Line` for its versions, so that the line we report for a frame
//! is the line `frame.f_lineno` (and therefore `traceback.extract_stack`) would
//! give inside the profiled process.
//!
//! The tables come from another process's memory and may be torn or garbage,
//! so every decoder is total: it only ever reads inside the slice, uses
//! wrapping arithmetic for the running line, and makes forward progress on
//! every iteration. None of them allocates.

/// Which line-table encoding a code object carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTableFormat {
    /// 2.7: co_lnotab, unsigned line increments.
    Lnotab27,
    /// 3.6–3.9: co_lnotab, signed line increments.
    Lnotab36,
    /// 3.10: co_linetable (start delta, line delta; -128 = no line).
    LineTable310,
    /// 3.11+: co_linetable location table (varint entries).
    Locations311,
}

/// The line for the instruction starting at byte offset `addr` (for 3.10+
/// callers pass code-unit index * 2), or None where the interpreter has no
/// line for it.
///
/// `table` is the raw `co_lnotab` (up to 3.9) or `co_linetable` (3.10+) and
/// `first_line` is `co_firstlineno`. A negative `addr` (a frame whose
/// `f_lasti` is still -1 because it has not started) yields `first_line`, as
/// the interpreter does. Never panics, whatever the bytes.
pub fn line_for_offset(
    format: LineTableFormat,
    table: &[u8],
    first_line: i32,
    addr: i32,
) -> Option<i32> {
    match format {
        LineTableFormat::Lnotab27 => Some(lnotab_line(table, first_line, addr, false)),
        LineTableFormat::Lnotab36 => Some(lnotab_line(table, first_line, addr, true)),
        LineTableFormat::LineTable310 => linetable_310_line(table, first_line, addr),
        LineTableFormat::Locations311 => locations_311_line(table, first_line, addr),
    }
}

/// co_lnotab: pairs (address increment, line increment). The line of `addr`
/// is the first line plus the line increments of every pair whose running
/// address has not passed `addr`. There is no "no line" in this format: past
/// the end the last line applies, and before the start `first_line` does.
fn lnotab_line(table: &[u8], first_line: i32, addr: i32, signed: bool) -> i32 {
    let mut line = first_line;
    // i64 so a long garbage table cannot overflow the running address.
    let mut pair_addr: i64 = 0;
    let target = i64::from(addr);
    // A trailing odd byte is ignored, as CPython only reads whole pairs.
    for pair in table.chunks_exact(2) {
        pair_addr += i64::from(pair[0]);
        if pair_addr > target {
            break;
        }
        let delta = if signed {
            i32::from(pair[1] as i8)
        } else {
            i32::from(pair[1])
        };
        line = line.wrapping_add(delta);
    }
    line
}

/// Line delta byte that marks a 3.10 range as having no line.
const NO_LINE_310: i8 = -128;

/// 3.10 co_linetable: pairs (byte length of the range, line delta). Ranges
/// are contiguous from offset 0. The compiler splits big deltas into
/// zero-length ranges; those only move the running line, the line of a
/// non-empty range is the running line after its own delta, and a -128 delta
/// makes the range line-less without moving the running line.
fn linetable_310_line(table: &[u8], first_line: i32, addr: i32) -> Option<i32> {
    if addr < 0 {
        return Some(first_line);
    }
    let target = i64::from(addr);
    let mut running_line = first_line;
    let mut end: i64 = 0;
    for pair in table.chunks_exact(2) {
        end += i64::from(pair[0]);
        let delta = pair[1] as i8;
        let line = if delta == NO_LINE_310 {
            None
        } else {
            running_line = running_line.wrapping_add(i32::from(delta));
            Some(running_line)
        };
        // Earlier ranges all ended at or before `target`, so the first range
        // reaching past it contains it; zero-length ranges never do.
        if target < end {
            return line;
        }
    }
    // Past the end of the table the interpreter reports no line.
    None
}

/// 3.11+ entry kinds, from bits 3–6 of an entry's first byte.
const KIND_ONE_LINE_0: u8 = 10;
const KIND_ONE_LINE_2: u8 = 12;
const KIND_NO_COLUMNS: u8 = 13;
const KIND_LONG: u8 = 14;

/// 3.11+ location table. Each entry starts with a byte that has bit 7 set;
/// bits 3–6 are its kind and bits 0–2 its length in code units minus one.
/// The bytes after it (up to the next byte with bit 7 set) carry the line
/// delta and columns, depending on the kind:
///
/// * 0–9: short form, same line, one column byte;
/// * 10–12: one-line form, line delta is kind - 10, two column bytes;
/// * 13: no columns, signed varint line delta;
/// * 14: long form, signed varint line delta then end line, column and end
///   column varints (only the delta matters for the line);
/// * 15: no location at all.
fn locations_311_line(table: &[u8], first_line: i32, addr: i32) -> Option<i32> {
    if addr < 0 {
        return Some(first_line);
    }
    let target = i64::from(addr);
    let mut running_line = first_line;
    let mut end: i64 = 0;
    let mut pos = 0;
    while pos < table.len() {
        let head = table[pos];
        // The entry's payload runs to the next byte with bit 7 set; this is
        // also how CPython finds the next entry, so a payload that is too
        // short or too long resynchronises the same way the interpreter does.
        let mut next = pos + 1;
        while next < table.len() && table[next] & 0x80 == 0 {
            next += 1;
        }
        let payload = &table[pos + 1..next];
        let kind = (head >> 3) & 0x0f;
        let delta = match kind {
            KIND_ONE_LINE_0..=KIND_ONE_LINE_2 => i32::from(kind - KIND_ONE_LINE_0),
            KIND_NO_COLUMNS | KIND_LONG => read_signed_varint(payload),
            _ => 0,
        };
        running_line = running_line.wrapping_add(delta);
        end += (i64::from(head & 0x07) + 1) * 2;
        if target < end {
            // CPython tests the whole byte, so only a well-formed (bit 7 set)
            // kind-15 head means "no location".
            return if head >> 3 == 0x1f {
                None
            } else {
                Some(running_line)
            };
        }
        pos = next;
    }
    None
}

/// Unsigned varint of the 3.11+ location table: 6-bit chunks, least
/// significant first, bit 6 set on every chunk but the last. Stops at the end
/// of `bytes`; chunks beyond 32 bits are dropped instead of overflowing,
/// however long a garbage payload is.
fn read_varint(bytes: &[u8]) -> u32 {
    let mut value: u32 = 0;
    let mut shift: u32 = 0;
    for &byte in bytes {
        if shift < 32 {
            value |= u32::from(byte & 0x3f) << shift;
        }
        shift = shift.saturating_add(6);
        if byte & 0x40 == 0 {
            break;
        }
    }
    value
}

/// Signed varint: the unsigned value holds the magnitude shifted left by one,
/// with the sign in bit 0.
fn read_signed_varint(bytes: &[u8]) -> i32 {
    let raw = read_varint(bytes);
    // `raw >> 1` is at most 2^31 - 1, so both conversions are lossless.
    let magnitude = (raw >> 1) as i32;
    if raw & 1 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use LineTableFormat::*;

    // ---- Hand-derived tables ----

    #[test]
    fn lnotab27_unsigned_increments() {
        // firstlineno 10; pairs: (+0 bytes, +1 line) (+6, +2) (+255, +0)
        // (+10, +255) (+0, +255).
        let table = [0, 1, 6, 2, 255, 0, 10, 255, 0, 255];
        let line = |addr| line_for_offset(Lnotab27, &table, 10, addr);
        // Before the start: nothing has been passed.
        assert_eq!(line(-1), Some(10));
        // The zero-length first pair applies from offset 0.
        assert_eq!(line(0), Some(11));
        assert_eq!(line(5), Some(11));
        assert_eq!(line(6), Some(13));
        assert_eq!(line(260), Some(13));
        // 0xff is +255, never -1, in 2.7.
        assert_eq!(line(271), Some(13 + 255 + 255));
        assert_eq!(line(100_000), Some(13 + 510));
    }

    #[test]
    fn lnotab36_signed_increments() {
        // firstlineno 400; (+4, +3) (+2, -128) (+0, -128) (+0, -20) (+8, +127).
        let table = [4, 3, 2, 0x80, 0, 0x80, 0, 0xec, 8, 0x7f];
        let line = |addr| line_for_offset(Lnotab36, &table, 400, addr);
        assert_eq!(line(-1), Some(400));
        assert_eq!(line(0), Some(400));
        assert_eq!(line(4), Some(403));
        // Three pairs at offset 6 add up to a single backwards jump of 276.
        assert_eq!(line(6), Some(403 - 128 - 128 - 20));
        assert_eq!(line(13), Some(127));
        assert_eq!(line(14), Some(254));
        // Same bytes read as 2.7 would be increments.
        assert_eq!(
            line_for_offset(Lnotab27, &table, 400, 6),
            Some(403 + 128 + 128 + 236)
        );
    }

    #[test]
    fn linetable310_ranges_and_no_line() {
        // firstlineno 7; (6 bytes, +1) (4 bytes, no line) (0 bytes, +127)
        // (0 bytes, +127) (2 bytes, +3) (2 bytes, -128) (254 bytes, -1).
        let table = [6, 1, 4, 0x80, 0, 127, 0, 127, 2, 3, 2, 0x80, 254, 0xff];
        let line = |addr| line_for_offset(LineTable310, &table, 7, addr);
        // f_lasti == -1 arrives as -2 and gives the first line.
        assert_eq!(line(-2), Some(7));
        assert_eq!(line(0), Some(8));
        assert_eq!(line(4), Some(8));
        assert_eq!(line(6), None);
        assert_eq!(line(8), None);
        // Zero-length ranges carry the 257-line jump; "no line" did not move it.
        assert_eq!(line(10), Some(8 + 127 + 127 + 3));
        assert_eq!(line(12), None);
        assert_eq!(line(14), Some(8 + 257 - 1));
        assert_eq!(line(267), Some(264));
        // Past the table: no line.
        assert_eq!(line(268), None);
    }

    #[test]
    fn locations311_every_entry_kind() {
        // firstlineno 20.
        let table = [
            // Kind 14 long form, 1 unit: delta -1 (varint 3), end-line 0,
            // column 0, end column 0. A module's RESUME looks like this.
            0xf0,
            0x03,
            0x00,
            0x00,
            0x00,
            // Kind 11 one-line form, 3 units: delta +1; columns 4 and 9.
            0xda,
            0x04,
            0x09,
            // Kind 5 short form, 8 units: same line.
            0xaf,
            0x12,
            // Kind 15 no location, 2 units.
            0xf9,
            // Kind 13 no columns, 1 unit: delta +300 = varint 600 = 0x58 | 0x40, 0x09.
            0xe8,
            0x58 | 0x40,
            0x09,
            // Kind 14 long form, 2 units: delta -5000 = varint 10001
            // (chunks 17, 28, 2), end line 1, column 70 (chunks 6, 1), end column 3.
            0xf1,
            0x51,
            0x5c,
            0x02,
            0x01,
            0x46,
            0x01,
            0x03,
            // Kind 12 one-line form, 1 unit: delta +2.
            0xe0,
            0x00,
            0x01,
        ];
        let line = |addr| line_for_offset(Locations311, &table, 20, addr);
        assert_eq!(line(-2), Some(20));
        assert_eq!(line(0), Some(19));
        assert_eq!(line(2), Some(20));
        assert_eq!(line(6), Some(20));
        assert_eq!(line(8), Some(20));
        assert_eq!(line(22), Some(20));
        assert_eq!(line(24), None);
        assert_eq!(line(26), None);
        assert_eq!(line(28), Some(320));
        assert_eq!(line(30), Some(320 - 5000));
        assert_eq!(line(32), Some(-4680));
        assert_eq!(line(34), Some(-4678));
        assert_eq!(line(36), None);
    }

    #[test]
    fn varints() {
        assert_eq!(read_varint(&[0x05]), 5);
        assert_eq!(read_varint(&[0x41, 0x01]), 65);
        // Runs out of bytes mid-varint: keeps what it has.
        assert_eq!(read_varint(&[0x7f]), 63);
        // Absurdly long varints do not overflow.
        assert_eq!(read_varint(&[0x7f; 20]), u32::MAX);
        assert_eq!(read_signed_varint(&[0x07]), -3);
        assert_eq!(read_signed_varint(&[0x06]), 3);
        assert_eq!(read_signed_varint(&[]), 0);
        assert_eq!(read_signed_varint(&[0x7f; 20]), -i32::MAX);
    }

    #[test]
    fn empty_tables() {
        assert_eq!(line_for_offset(Lnotab27, &[], 5, 10), Some(5));
        assert_eq!(line_for_offset(Lnotab36, &[], 5, 10), Some(5));
        assert_eq!(line_for_offset(LineTable310, &[], 5, 10), None);
        assert_eq!(line_for_offset(Locations311, &[], 5, 10), None);
    }

    // ---- Totality on garbage ----

    /// xorshift64*: enough randomness for fuzzing without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    const FORMATS: [LineTableFormat; 4] = [Lnotab27, Lnotab36, LineTable310, Locations311];

    #[test]
    fn random_and_truncated_tables_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut table = [0u8; 300];
        for round in 0..20_000 {
            let len = (rng.next() % 300) as usize;
            for byte in table.iter_mut().take(len) {
                *byte = rng.next() as u8;
            }
            if round % 4 == 0 {
                // Runs of extreme bytes: long varints, -128s, 0xff increments.
                let fill = [0x00, 0x7f, 0x80, 0xff][(rng.next() % 4) as usize];
                table[..len].fill(fill);
            }
            let first_line = match round % 3 {
                0 => i32::MAX,
                1 => i32::MIN,
                _ => rng.next() as i32,
            };
            let addr = match round % 5 {
                0 => i32::MAX,
                1 => i32::MIN,
                2 => -1,
                _ => (rng.next() % 700) as i32,
            };
            for format in FORMATS {
                for cut in [len, len / 2, len.saturating_sub(1)] {
                    let _ = line_for_offset(format, &table[..cut], first_line, addr);
                }
            }
        }
    }

    // ---- Fixtures recorded from the real interpreters ----

    #[derive(Deserialize)]
    struct Fixture {
        version: String,
        offsets: usize,
        probes: Vec<Probe>,
        codes: Vec<Code>,
    }

    #[derive(Deserialize)]
    struct Probe {
        name: String,
        first_line: i32,
        table: String,
        /// (Python-level f_lasti, f_lineno) of real frames.
        frames: Vec<(i32, Option<i32>)>,
    }

    #[derive(Deserialize)]
    struct Code {
        name: String,
        first_line: i32,
        table: String,
        step: i32,
        /// (start, end exclusive, line) with offsets stepping by `step`.
        runs: Vec<(i32, i32, Option<i32>)>,
        /// PyCode_Addr2Line for a frame whose f_lasti is -1.
        before_start: Option<i32>,
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("fixture hex"))
            .collect()
    }

    /// Checks every recorded offset; returns how many were checked.
    fn check_fixture(json: &str) -> usize {
        let fixture: Fixture = serde_json::from_str(json).expect("fixture parses");
        let (major, minor) = fixture.version.split_once('.').expect("X.Y version");
        let version: (u32, u32) = (major.parse().unwrap(), minor.parse().unwrap());
        let format = match version {
            (2, _) => Lnotab27,
            (3, 6..=9) => Lnotab36,
            (3, 10) => LineTable310,
            _ => Locations311,
        };
        // How a not-yet-started frame's f_lasti == -1 reaches PyCode_Addr2Line.
        let before_start_addr = if version >= (3, 10) { -2 } else { -1 };

        let mut checked = 0;
        for code in &fixture.codes {
            let table = hex(&code.table);
            assert_eq!(
                line_for_offset(format, &table, code.first_line, before_start_addr),
                code.before_start,
                "{} {}: before start",
                fixture.version,
                code.name
            );
            let mut expected_start = 0;
            for &(start, end, line) in &code.runs {
                assert_eq!(start, expected_start, "{}: runs are contiguous", code.name);
                expected_start = end;
                for addr in (start..end).step_by(code.step as usize) {
                    assert_eq!(
                        line_for_offset(format, &table, code.first_line, addr),
                        line,
                        "{} {} at offset {}",
                        fixture.version,
                        code.name,
                        addr
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(
            checked, fixture.offsets,
            "{}: offsets checked",
            fixture.version
        );

        for probe in &fixture.probes {
            let table = hex(&probe.table);
            for &(lasti, lineno) in &probe.frames {
                // Python-level f_lasti is already in bytes on every version.
                let addr = if lasti < 0 { before_start_addr } else { lasti };
                assert_eq!(
                    line_for_offset(format, &table, probe.first_line, addr),
                    lineno,
                    "{} {} frame at f_lasti {}",
                    fixture.version,
                    probe.name,
                    lasti
                );
            }
        }
        checked
    }

    macro_rules! fixture_tests {
        ($($name:ident => $file:literal,)*) => {
            $(
                #[test]
                fn $name() {
                    let checked = check_fixture(include_str!(concat!(
                        "../tests/fixtures/linetable/",
                        $file
                    )));
                    assert!(checked > 1000, "{} checked only {} offsets", $file, checked);
                }
            )*

            #[test]
            fn truncated_fixture_tables_never_panic() {
                for json in [$(include_str!(concat!("../tests/fixtures/linetable/", $file))),*] {
                    let fixture: Fixture = serde_json::from_str(json).unwrap();
                    for code in &fixture.codes {
                        let table = hex(&code.table);
                        for cut in 0..table.len() {
                            for format in FORMATS {
                                for addr in [-2, 0, 7, 100, 4000] {
                                    let _ = line_for_offset(format, &table[..cut], code.first_line, addr);
                                }
                            }
                        }
                    }
                }
            }
        };
    }

    fixture_tests! {
        fixture_2_7 => "2.7.json",
        fixture_3_6 => "3.6.json",
        fixture_3_7 => "3.7.json",
        fixture_3_8 => "3.8.json",
        fixture_3_9 => "3.9.json",
        fixture_3_10 => "3.10.json",
        fixture_3_11 => "3.11.json",
        fixture_3_12 => "3.12.json",
        fixture_3_13 => "3.13.json",
        fixture_3_14 => "3.14.json",
        fixture_3_15 => "3.15.json",
    }
}
