//! Reading Python objects out of the target: strings, numbers, containers, dicts and
//! instance attributes, and Python-style reprs of them for `dump --locals`.
//!
//! Everything here is bounded: string lengths, container sizes, dict scans and recursion
//! all have caps, because a pointer into a half-written object is read as garbage.

use std::cell::RefCell;
use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::layout::{DictModel, InstanceDictModel, Layout, LongModel, StrModel};
use crate::memory::{Fields, MemoryReader, MemoryReaderExt};

/// Longest string we read in full (bytes of character data).
const MAX_STRING_BYTES: usize = 1 << 16;
/// Most entries we visit in one dict (sys.modules is the biggest we scan).
const MAX_DICT_ENTRIES: usize = 1 << 16;
/// Most entries of an instance's `__dict__` (or of its type's shared keys) searched for one
/// attribute. Objects have tens of attributes; a garbage dict claiming 65 536 entries would
/// cost a string read per entry, and naming threads looks up two attributes per thread.
const MAX_INSTANCE_ATTRS: usize = 4096;
/// Most digits of an `int` we convert (30 bits each).
const MAX_LONG_DIGITS: usize = 1024;
/// A repr longer than this is cut, keeping the first `REPR_KEEP` characters and "...".
pub const REPR_MAX: usize = 128;
const REPR_KEEP: usize = REPR_MAX - 3;
/// Container elements shown before "...".
const REPR_ITEMS: usize = 16;
/// Nesting shown before "...".
const REPR_DEPTH: usize = 3;

/// Reads objects of one target through one layout, caching type names.
pub struct ObjectReader<'a, M: MemoryReader + ?Sized> {
    mem: &'a M,
    layout: &'a Layout,
    type_names: RefCell<HashMap<u64, String>>,
}

impl<'a, M: MemoryReader + ?Sized> ObjectReader<'a, M> {
    /// A reader for `mem` using `layout`.
    pub fn new(mem: &'a M, layout: &'a Layout) -> Self {
        ObjectReader {
            mem,
            layout,
            type_names: RefCell::new(HashMap::new()),
        }
    }

    /// The memory being read.
    pub fn memory(&self) -> &'a M {
        self.mem
    }

    /// The layout in use.
    pub fn layout(&self) -> &'a Layout {
        self.layout
    }

    /// The type object of `obj`.
    pub fn type_of(&self, obj: u64) -> Result<u64> {
        Ok(self
            .mem
            .read_u64(obj.wrapping_add(self.layout.objects.ob_type as u64))?)
    }

    /// `tp_name` of a type object (cached per type).
    pub fn type_name(&self, tp: u64) -> Result<String> {
        if let Some(name) = self.type_names.borrow().get(&tp) {
            return Ok(name.clone());
        }
        let name_ptr = self
            .mem
            .read_u64(tp.wrapping_add(self.layout.objects.tp_name as u64))?;
        let name = String::from_utf8_lossy(&self.mem.read_c_string(name_ptr, 256)?).into_owned();
        self.type_names.borrow_mut().insert(tp, name.clone());
        Ok(name)
    }

    /// `tp_name` of `obj`'s type.
    pub fn type_name_of(&self, obj: u64) -> Result<String> {
        self.type_name(self.type_of(obj)?)
    }

    /// The text of a `str` (or, on Python 2, of a `str` or `unicode`), at most `max_chars`
    /// characters (the caller learns about the cut through the returned flag).
    pub fn read_string_prefix(&self, obj: u64, max_chars: usize) -> Result<(String, bool)> {
        match self.layout.strings {
            StrModel::Pep393 {
                length,
                state,
                ascii_size,
                compact_size,
                data_any,
                kind_shift,
                compact_bit,
                ascii_bit,
            } => {
                let header = self
                    .mem
                    .read_vec(obj, compact_size.max(data_any + 8), 4096)?;
                let len = header.i64_at(length);
                if len < 0 {
                    bail!("negative string length at {obj:#x}");
                }
                let bits = header.u32_at(state);
                let kind = ((bits >> kind_shift) & 7) as usize;
                let compact = bits >> compact_bit & 1 == 1;
                let ascii = bits >> ascii_bit & 1 == 1;
                if !matches!(kind, 1 | 2 | 4) {
                    bail!("string at {obj:#x} has kind {kind}");
                }
                let data = match (compact, ascii) {
                    (true, true) => obj.wrapping_add(ascii_size as u64),
                    (true, false) => obj.wrapping_add(compact_size as u64),
                    (false, _) => header.u64_at(data_any),
                };
                let chars = (len as usize).min(max_chars);
                let raw = self
                    .mem
                    .read_vec(data, chars * kind, MAX_STRING_BYTES * 4)?;
                Ok((decode_units(&raw, kind), chars < len as usize))
            }
            StrModel::Py2 {
                string_sval,
                unicode_str,
                unicode_length,
                unicode_char_size,
            } => {
                let tp = self.type_name_of(obj)?;
                if tp == "unicode" {
                    let len = self.mem.read_i64(obj.wrapping_add(unicode_length as u64))?;
                    let buf = self.mem.read_u64(obj.wrapping_add(unicode_str as u64))?;
                    if len < 0 {
                        bail!("negative unicode length at {obj:#x}");
                    }
                    let chars = (len as usize).min(max_chars);
                    let raw =
                        self.mem
                            .read_vec(buf, chars * unicode_char_size, MAX_STRING_BYTES * 4)?;
                    Ok((decode_units(&raw, unicode_char_size), chars < len as usize))
                } else {
                    let len = self
                        .mem
                        .read_i64(obj.wrapping_add(self.layout.objects.ob_size as u64))?;
                    if len < 0 {
                        bail!("negative string length at {obj:#x}");
                    }
                    let n = (len as usize).min(max_chars);
                    let raw = self.mem.read_vec(
                        obj.wrapping_add(string_sval as u64),
                        n,
                        MAX_STRING_BYTES,
                    )?;
                    Ok((String::from_utf8_lossy(&raw).into_owned(), n < len as usize))
                }
            }
        }
    }

    /// The whole text of a string object (bounded by [`MAX_STRING_BYTES`] characters).
    pub fn read_string(&self, obj: u64) -> Result<String> {
        Ok(self.read_string_prefix(obj, MAX_STRING_BYTES)?.0)
    }

    /// The bytes of a `bytes` object (Python 2 `str`), at most `max` of them: `max` is
    /// what bounds the allocation, so a caller may read more than a string's worth (a line
    /// table of a big module is over 64 KiB).
    pub fn read_bytes_prefix(&self, obj: u64, max: usize) -> Result<(Vec<u8>, bool)> {
        let len = self
            .mem
            .read_i64(obj.wrapping_add(self.layout.objects.ob_size as u64))?;
        if len < 0 {
            bail!("negative bytes length at {obj:#x}");
        }
        let n = (len as usize).min(max);
        let raw = self.mem.read_vec(
            obj.wrapping_add(self.layout.objects.bytes_sval as u64),
            n,
            max,
        )?;
        Ok((raw, n < len as usize))
    }

    /// The value of an `int` (`long` on Python 2) as (negative, magnitude digits base 2^bits).
    fn long_digits(&self, obj: u64) -> Result<(bool, Vec<u32>)> {
        let (negative, count) = match self.layout.longs {
            LongModel::SignedSize => {
                let size = self
                    .mem
                    .read_i64(obj.wrapping_add(self.layout.objects.ob_size as u64))?;
                (size < 0, size.unsigned_abs() as usize)
            }
            LongModel::Tagged { lv_tag } => {
                let tag = self.mem.read_u64(obj.wrapping_add(lv_tag as u64))?;
                // Low two bits: 0 positive, 1 zero, 2 negative; the digit count above bit 3.
                (tag & 3 == 2, (tag >> 3) as usize)
            }
        };
        if count > MAX_LONG_DIGITS {
            bail!("int at {obj:#x} has {count} digits");
        }
        let digit_size = if self.layout.objects.digit_bits == 30 {
            4
        } else {
            2
        };
        let raw = self.mem.read_vec(
            obj.wrapping_add(self.layout.objects.long_digits as u64),
            count * digit_size,
            MAX_LONG_DIGITS * 4,
        )?;
        let digits = raw
            .chunks_exact(digit_size)
            .map(|c| {
                if digit_size == 4 {
                    u32::from_le_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from(u16::from_le_bytes([c[0], c[1]]))
                }
            })
            .collect();
        Ok((negative, digits))
    }

    /// The value of a small `int` (fits in 64 bits), for thread idents.
    pub fn read_int_u64(&self, obj: u64) -> Result<u64> {
        if self.type_name_of(obj)? == "int" {
            if let Some(ival) = self.layout.objects.int_ival {
                return Ok(self.mem.read_i64(obj.wrapping_add(ival as u64))? as u64);
            }
        }
        let (negative, digits) = self.long_digits(obj)?;
        let bits = self.layout.objects.digit_bits;
        let mut value: u128 = 0;
        for d in digits.iter().rev() {
            value = (value << bits) | u128::from(*d);
            if value > u128::from(u64::MAX) {
                bail!("int at {obj:#x} does not fit in 64 bits");
            }
        }
        let value = value as u64;
        Ok(if negative {
            value.wrapping_neg()
        } else {
            value
        })
    }

    /// The decimal text of an `int` of any size.
    pub fn int_repr(&self, obj: u64) -> Result<String> {
        let (negative, digits) = self.long_digits(obj)?;
        Ok(digits_to_decimal(
            negative,
            &digits,
            self.layout.objects.digit_bits,
        ))
    }

    /// Elements of a tuple or list (by their item-array offset), at most `max`.
    fn sequence_items(&self, obj: u64, list: bool, max: usize) -> Result<(Vec<u64>, bool)> {
        let len = self
            .mem
            .read_i64(obj.wrapping_add(self.layout.objects.ob_size as u64))?;
        if len < 0 {
            bail!("negative sequence length at {obj:#x}");
        }
        let n = (len as usize).min(max);
        let items = if list {
            self.mem
                .read_u64(obj.wrapping_add(self.layout.objects.list_items as u64))?
        } else {
            obj.wrapping_add(self.layout.objects.tuple_items as u64)
        };
        let raw = self.mem.read_vec(items, n * 8, 1 << 20)?;
        Ok((
            raw.chunks_exact(8).map(|c| c.u64_at(0)).collect(),
            n < len as usize,
        ))
    }

    /// Items of a tuple, at most `max`.
    pub fn tuple_items(&self, obj: u64, max: usize) -> Result<Vec<u64>> {
        Ok(self.sequence_items(obj, false, max)?.0)
    }

    /// Key/value pairs of a dict in insertion order, at most `max`.
    pub fn dict_items(&self, dict: u64, max: usize) -> Result<Vec<(u64, u64)>> {
        let max = max.min(MAX_DICT_ENTRIES);
        let d = &self.layout.dicts;
        match d.model {
            DictModel::Py27 { ma_mask, ma_table } => {
                let mask = self.mem.read_i64(dict.wrapping_add(ma_mask as u64))?;
                if !(0..MAX_DICT_ENTRIES as i64).contains(&mask) {
                    bail!("dict at {dict:#x} has mask {mask}");
                }
                let table = self.mem.read_u64(dict.wrapping_add(ma_table as u64))?;
                let raw = self.mem.read_vec(
                    table,
                    (mask as usize + 1) * d.entry_size,
                    MAX_DICT_ENTRIES * 24,
                )?;
                Ok(raw
                    .chunks_exact(d.entry_size)
                    .map(|e| (e.u64_at(8), e.u64_at(16)))
                    .filter(|(k, v)| *k != 0 && *v != 0)
                    .take(max)
                    .collect())
            }
            DictModel::Py36 { dk_size } => {
                let keys = self.mem.read_u64(dict.wrapping_add(d.keys as u64))?;
                let values = self.mem.read_u64(dict.wrapping_add(d.values as u64))?;
                let header = self.mem.read_vec(keys, d.indices, 256)?;
                let size = header.i64_at(dk_size);
                if !(1..=MAX_DICT_ENTRIES as i64 * 2).contains(&size) {
                    bail!("dict keys at {keys:#x} have size {size}");
                }
                let index_bytes = index_width(size as u64) * size as usize;
                let entries = keys.wrapping_add((d.indices + index_bytes) as u64);
                self.keys_entries(
                    entries,
                    header.i64_at(d.nentries),
                    d.entry_size,
                    8,
                    values,
                    0,
                    max,
                )
            }
            DictModel::Py311 {
                dk_log2_size: _,
                dk_log2_index_bytes,
                dk_kind,
                unicode_entry_size,
                values_array,
            } => {
                let keys = self.mem.read_u64(dict.wrapping_add(d.keys as u64))?;
                let values = self.mem.read_u64(dict.wrapping_add(d.values as u64))?;
                self.keys311_items(
                    keys,
                    values,
                    values_array,
                    dk_log2_index_bytes,
                    dk_kind,
                    unicode_entry_size,
                    max,
                )
            }
        }
    }

    /// Items of a 3.11+ keys object, with values either in the entries or in `values`.
    #[allow(clippy::too_many_arguments)]
    fn keys311_items(
        &self,
        keys: u64,
        values: u64,
        values_array: usize,
        dk_log2_index_bytes: usize,
        dk_kind: usize,
        unicode_entry_size: usize,
        max: usize,
    ) -> Result<Vec<(u64, u64)>> {
        let d = &self.layout.dicts;
        let header = self.mem.read_vec(keys, d.indices, 256)?;
        let log2_index_bytes = header.u8_at(dk_log2_index_bytes);
        if log2_index_bytes > 24 {
            bail!("dict keys at {keys:#x} claim 2^{log2_index_bytes} index bytes");
        }
        let entries = keys
            .wrapping_add(d.indices as u64)
            .wrapping_add(1u64 << log2_index_bytes);
        // Kind 0 is the general table with hashes; unicode and split tables omit them.
        let (entry_size, key_at) = if header.u8_at(dk_kind) == 0 {
            (d.entry_size, 8)
        } else {
            (unicode_entry_size, 0)
        };
        self.keys_entries(
            entries,
            header.i64_at(d.nentries),
            entry_size,
            key_at,
            values,
            values_array,
            max,
        )
    }

    /// Reads `nentries` entries of `entry_size` bytes with the key at `key_at` and the value
    /// right after it, or taken from the split `values` array when that is non-null.
    #[allow(clippy::too_many_arguments)]
    fn keys_entries(
        &self,
        entries: u64,
        nentries: i64,
        entry_size: usize,
        key_at: usize,
        values: u64,
        values_array: usize,
        max: usize,
    ) -> Result<Vec<(u64, u64)>> {
        if !(0..=MAX_DICT_ENTRIES as i64).contains(&nentries) {
            bail!("dict has {nentries} entries");
        }
        let n = nentries as usize;
        let raw = self
            .mem
            .read_vec(entries, n * entry_size, MAX_DICT_ENTRIES * 24)?;
        let split = if values != 0 {
            Some(self.mem.read_vec(
                values.wrapping_add(values_array as u64),
                n * 8,
                MAX_DICT_ENTRIES * 8,
            )?)
        } else {
            None
        };
        let mut out = Vec::new();
        for (i, e) in raw.chunks_exact(entry_size).enumerate() {
            let key = e.u64_at(key_at);
            let value = match &split {
                Some(v) => v.u64_at(i * 8),
                None => e.u64_at(key_at + 8),
            };
            if key != 0 && value != 0 {
                out.push((key, value));
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The value stored under the string key `key`, if any.
    pub fn dict_get_str(&self, dict: u64, key: &str) -> Result<Option<u64>> {
        self.dict_get_str_within(dict, key, MAX_DICT_ENTRIES)
    }

    /// [`Self::dict_get_str`] looking at no more than the first `max` entries.
    fn dict_get_str_within(&self, dict: u64, key: &str, max: usize) -> Result<Option<u64>> {
        for (k, v) in self.dict_items(dict, max)? {
            if self.string_equals(k, key) {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Whether a string object's text is exactly `text` (false on any read problem).
    fn string_equals(&self, obj: u64, text: &str) -> bool {
        match self.read_string_prefix(obj, text.len() + 1) {
            Ok((s, _)) => s == text,
            Err(_) => false,
        }
    }

    /// The instance attribute `name` of a Python-level object, from its `__dict__` or its
    /// managed/inline values (3.11+).
    pub fn instance_attr(&self, obj: u64, name: &str) -> Result<Option<u64>> {
        let tp = self.type_of(obj)?;
        let o = &self.layout.objects;
        let read_dict = |dict: u64| -> Result<Option<u64>> {
            if dict == 0 {
                Ok(None)
            } else {
                self.dict_get_str_within(dict, name, MAX_INSTANCE_ATTRS)
            }
        };
        let cached_values = |values: u64, values_array: usize| -> Result<Option<u64>> {
            let Some(cached) = o.ht_cached_keys else {
                return Ok(None);
            };
            let keys = self.mem.read_u64(tp.wrapping_add(cached as u64))?;
            if keys == 0 || values == 0 {
                return Ok(None);
            }
            let DictModel::Py311 {
                dk_log2_index_bytes,
                dk_kind,
                unicode_entry_size,
                ..
            } = self.layout.dicts.model
            else {
                return Ok(None);
            };
            for (k, v) in self.keys311_items(
                keys,
                values,
                values_array,
                dk_log2_index_bytes,
                dk_kind,
                unicode_entry_size,
                MAX_INSTANCE_ATTRS,
            )? {
                if self.string_equals(k, name) {
                    return Ok(Some(v));
                }
            }
            Ok(None)
        };
        let values_array = match self.layout.dicts.model {
            DictModel::Py311 { values_array, .. } => values_array,
            _ => 0,
        };
        match self.layout.instance_dicts {
            InstanceDictModel::DictOffset => {
                let offset = self.mem.read_i64(tp.wrapping_add(o.tp_dictoffset as u64))?;
                if offset <= 0 {
                    return Ok(None);
                }
                read_dict(self.mem.read_u64(obj.wrapping_add(offset as u64))?)
            }
            InstanceDictModel::Managed311 { dict, values } => {
                let d = self.mem.read_u64(obj.wrapping_add(dict as u64))?;
                if d != 0 {
                    return read_dict(d);
                }
                let v = self.mem.read_u64(obj.wrapping_add(values as u64))?;
                cached_values(v, values_array)
            }
            InstanceDictModel::Managed312 { dict_or_values } => {
                let p = self.mem.read_u64(obj.wrapping_add(dict_or_values as u64))?;
                // Values are stored as `values - 1`, which sets the low bit.
                if p & 1 == 1 {
                    cached_values(p.wrapping_add(1), values_array)
                } else {
                    read_dict(p)
                }
            }
            InstanceDictModel::Inline313 { dict, values_valid } => {
                let d = self.mem.read_u64(obj.wrapping_add(dict as u64))?;
                if d != 0 {
                    return read_dict(d);
                }
                let basic = self.mem.read_i64(tp.wrapping_add(o.tp_basicsize as u64))?;
                if !(0..1 << 20).contains(&basic) {
                    return Ok(None);
                }
                let values = obj.wrapping_add(basic as u64);
                if self.mem.read_u8(values.wrapping_add(values_valid as u64))? == 0 {
                    return Ok(None);
                }
                cached_values(values, values_array)
            }
        }
    }

    /// A Python-style repr of `obj`, at most [`REPR_MAX`] characters.
    pub fn repr(&self, obj: u64) -> String {
        let full = self.repr_at(obj, 0);
        truncate_repr(full)
    }

    fn repr_at(&self, obj: u64, depth: usize) -> String {
        match self.try_repr(obj, depth) {
            Ok(s) => s,
            Err(_) => format!("<object at {obj:#x}>"),
        }
    }

    fn try_repr(&self, obj: u64, depth: usize) -> Result<String> {
        if obj == 0 {
            return Ok("NULL".to_string());
        }
        let tp = self.type_name_of(obj)?;
        let py2 = matches!(self.layout.strings, StrModel::Py2 { .. });
        Ok(match tp.as_str() {
            "NoneType" => "None".to_string(),
            "bool" => {
                let (_, digits) = if py2 {
                    let v = self.mem.read_i64(
                        obj.wrapping_add(self.layout.objects.int_ival.unwrap_or_default() as u64),
                    )?;
                    (false, vec![v as u32])
                } else {
                    self.long_digits(obj)?
                };
                if digits.iter().any(|d| *d != 0) {
                    "True"
                } else {
                    "False"
                }
                .to_string()
            }
            "int" if py2 => {
                let v = self.mem.read_i64(
                    obj.wrapping_add(self.layout.objects.int_ival.unwrap_or_default() as u64),
                )?;
                v.to_string()
            }
            "int" => self.int_repr(obj)?,
            "long" => format!("{}L", self.int_repr(obj)?),
            "float" => {
                let bits = self
                    .mem
                    .read_u64(obj.wrapping_add(self.layout.objects.float_fval as u64))?;
                float_repr(f64::from_bits(bits))
            }
            "str" if py2 => {
                let (raw, cut) = self.read_bytes_prefix(obj, REPR_MAX)?;
                with_cut(bytes_repr("", &raw), cut)
            }
            "unicode" => {
                let (text, cut) = self.read_string_prefix(obj, REPR_MAX)?;
                with_cut(str_repr("u", &text, true), cut)
            }
            "str" => {
                let (text, cut) = self.read_string_prefix(obj, REPR_MAX)?;
                with_cut(str_repr("", &text, false), cut)
            }
            "bytes" => {
                let (raw, cut) = self.read_bytes_prefix(obj, REPR_MAX)?;
                with_cut(bytes_repr("b", &raw), cut)
            }
            "tuple" | "list" if depth < REPR_DEPTH => {
                let list = tp == "list";
                let (items, cut) = self.sequence_items(obj, list, REPR_ITEMS)?;
                let mut parts: Vec<String> =
                    items.iter().map(|i| self.repr_at(*i, depth + 1)).collect();
                if cut {
                    parts.push("...".to_string());
                }
                let inner = parts.join(", ");
                match (list, parts.len()) {
                    (true, _) => format!("[{inner}]"),
                    (false, 1) => format!("({inner},)"),
                    (false, _) => format!("({inner})"),
                }
            }
            "dict" if depth < REPR_DEPTH => {
                let items = self.dict_items(obj, REPR_ITEMS + 1)?;
                let mut parts: Vec<String> = items
                    .iter()
                    .take(REPR_ITEMS)
                    .map(|(k, v)| {
                        format!(
                            "{}: {}",
                            self.repr_at(*k, depth + 1),
                            self.repr_at(*v, depth + 1)
                        )
                    })
                    .collect();
                if items.len() > REPR_ITEMS {
                    parts.push("...".to_string());
                }
                format!("{{{}}}", parts.join(", "))
            }
            "set" | "frozenset" if depth < REPR_DEPTH => {
                let items = self.set_items(obj, REPR_ITEMS + 1)?;
                let mut parts: Vec<String> = items
                    .iter()
                    .take(REPR_ITEMS)
                    .map(|k| self.repr_at(*k, depth + 1))
                    .collect();
                if items.len() > REPR_ITEMS {
                    parts.push("...".to_string());
                }
                set_repr(&tp, &parts, py2)
            }
            _ => format!("<{tp} at {obj:#x}>"),
        })
    }

    /// Members of a set, in table order, at most `max`.
    fn set_items(&self, obj: u64, max: usize) -> Result<Vec<u64>> {
        let o = &self.layout.objects;
        let mask = self.mem.read_i64(obj.wrapping_add(o.set_mask as u64))?;
        if !(0..MAX_DICT_ENTRIES as i64).contains(&mask) {
            bail!("set at {obj:#x} has mask {mask}");
        }
        let table = self.mem.read_u64(obj.wrapping_add(o.set_table as u64))?;
        let raw = self.mem.read_vec(
            table,
            (mask as usize + 1) * o.set_entry_size,
            MAX_DICT_ENTRIES * 16,
        )?;
        // Deleted slots hold the `dummy` key; it is a bare `object`, which no real member is
        // likely to be, but check the type to be sure.
        let mut out = Vec::new();
        for e in raw.chunks_exact(o.set_entry_size) {
            let key = e.u64_at(o.set_entry_key);
            if key != 0 && self.type_name_of(key).is_ok_and(|t| t != "object") {
                out.push(key);
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Python's repr of a set or frozenset (`name`) whose members have the reprs `parts`:
/// Python 3 writes `set()`, `{1, 2}`, `frozenset()` and `frozenset({1, 2})`; Python 2
/// writes `set([])`, `set([1, 2])`, `frozenset([])` and `frozenset([1, 2])`.
fn set_repr(name: &str, parts: &[String], py2: bool) -> String {
    let inner = parts.join(", ");
    match (py2, name, parts.is_empty()) {
        (true, _, _) => format!("{name}([{inner}])"),
        (false, _, true) => format!("{name}()"),
        (false, "set", false) => format!("{{{inner}}}"),
        (false, _, false) => format!("{name}({{{inner}}})"),
    }
}

/// Byte width of a 3.6–3.10 dict index entry for a table of `size` slots.
fn index_width(size: u64) -> usize {
    if size <= 0xff {
        1
    } else if size <= 0xffff {
        2
    } else if size <= 0xffff_ffff {
        4
    } else {
        8
    }
}

/// Decodes `kind`-byte code units (Latin-1, UCS-2 or UCS-4) into a String.
fn decode_units(raw: &[u8], kind: usize) -> String {
    let unit = |c: &[u8]| -> u32 {
        match kind {
            1 => u32::from(c[0]),
            2 => u32::from(u16::from_le_bytes([c[0], c[1]])),
            _ => u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        }
    };
    raw.chunks_exact(kind)
        .map(|c| char::from_u32(unit(c)).unwrap_or('\u{fffd}'))
        .collect()
}

/// Converts little-endian base-2^bits digits into decimal text.
fn digits_to_decimal(negative: bool, digits: &[u32], bits: u32) -> String {
    // Repeatedly divide the magnitude by 10^9, collecting remainders.
    let mut mag: Vec<u32> = digits.to_vec();
    while mag.last() == Some(&0) {
        mag.pop();
    }
    if mag.is_empty() {
        return "0".to_string();
    }
    let mut chunks = Vec::new();
    while !mag.is_empty() {
        let mut rem: u64 = 0;
        for d in mag.iter_mut().rev() {
            let cur = (rem << bits) | u64::from(*d);
            *d = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
        while mag.last() == Some(&0) {
            mag.pop();
        }
    }
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    out.push_str(&chunks.last().copied().unwrap_or(0).to_string());
    for c in chunks.iter().rev().skip(1) {
        out.push_str(&format!("{c:09}"));
    }
    out
}

/// Python's `repr(float)`: the shortest round-tripping digits, in exponent form when the
/// decimal exponent is below -4 or at least 16.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-tripping mantissa, like Python's repr.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    if !(-4..16).contains(&exp) {
        let mut m = digits[..1].to_string();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        return format!(
            "{sign}{m}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        );
    }
    let point = exp + 1;
    let body = if point <= 0 {
        format!("0.{}{}", "0".repeat((-point) as usize), digits)
    } else if point as usize >= digits.len() {
        format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    format!("{sign}{body}")
}

/// Python's repr of a str: quotes chosen like CPython, escapes for unprintables.
/// `ascii_only` escapes every non-ASCII character (Python 2's `unicode` repr).
fn str_repr(prefix: &str, text: &str, ascii_only: bool) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(prefix);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if (ascii_only && !c.is_ascii()) || (!ascii_only && !is_printable(c)) => {
                let v = c as u32;
                if v <= 0xff {
                    out.push_str(&format!("\\x{v:02x}"));
                } else if v <= 0xffff {
                    out.push_str(&format!("\\u{v:04x}"));
                } else {
                    out.push_str(&format!("\\U{v:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// An approximation of `str.isprintable` for characters outside ASCII: control and
/// format characters, separators other than space, and surrogates/unassigned are escaped.
fn is_printable(c: char) -> bool {
    let v = c as u32;
    !(c.is_control()
        || (0x80..0xa0).contains(&v)
        || v == 0xa0
        || v == 0xad
        || (0x2000..=0x200f).contains(&v)
        || (0x2028..=0x202f).contains(&v)
        || (0x205f..=0x206f).contains(&v)
        || v == 0x3000
        || v == 0xfeff
        || (0xfff9..=0xfffb).contains(&v)
        || (0xe000..=0xf8ff).contains(&v)
        || v >= 0xf0000)
}

/// Python's repr of bytes (or a Python 2 `str`), with the given prefix.
fn bytes_repr(prefix: &str, raw: &[u8]) -> String {
    let quote = if raw.contains(&b'\'') && !raw.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = String::from(prefix);
    out.push(quote as char);
    for &b in raw {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b if b == quote => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote as char);
    out
}

/// Marks a repr whose source was cut short: it gets truncated with "..." later.
fn with_cut(repr: String, cut: bool) -> String {
    if cut {
        // Pad past the limit so truncation always adds the ellipsis.
        let mut r = repr;
        while r.chars().count() <= REPR_MAX {
            r.push('\u{0}');
        }
        r
    } else {
        repr
    }
}

/// Cuts a repr longer than [`REPR_MAX`] characters to its first `REPR_KEEP` plus "...".
pub fn truncate_repr(repr: String) -> String {
    if repr.chars().count() <= REPR_MAX {
        return repr;
    }
    let mut out: String = repr.chars().take(REPR_KEEP).collect();
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_python() {
        for (x, want) in [
            (1.5, "1.5"),
            (1e20, "1e+20"),
            (0.1, "0.1"),
            (1.0, "1.0"),
            (-2.5e-7, "-2.5e-07"),
            (123456789012345.0, "123456789012345.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (f64::INFINITY, "inf"),
            (-0.0, "-0.0"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ] {
            assert_eq!(float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn big_ints_in_decimal() {
        // 2**100 in 30-bit digits.
        let two100 = [0u32, 0, 0, 1 << 10];
        assert_eq!(
            digits_to_decimal(false, &two100, 30),
            "1267650600228229401496703205376"
        );
        assert_eq!(digits_to_decimal(true, &[5], 30), "-5");
        assert_eq!(digits_to_decimal(false, &[], 30), "0");
        // 2**70 in 15-bit digits: 70 = 4*15 + 10.
        assert_eq!(
            digits_to_decimal(true, &[0, 0, 0, 0, 1 << 10], 15),
            "-1180591620717411303424"
        );
    }

    #[test]
    fn strings_like_python() {
        assert_eq!(str_repr("", "abc", false), "'abc'");
        assert_eq!(str_repr("", "it's", false), "\"it's\"");
        assert_eq!(str_repr("", "a'\"b", false), "'a\\'\"b'");
        assert_eq!(str_repr("", "привет 🐍\n", false), "'привет 🐍\\n'");
        assert_eq!(str_repr("u", "пр", true), "u'\\u043f\\u0440'");
        assert_eq!(bytes_repr("b", b"a\x00\xff'"), "b\"a\\x00\\xff'\"");
        let long = truncate_repr(str_repr("", &"x".repeat(1000), false));
        assert_eq!(long.chars().count(), REPR_MAX);
        assert!(long.ends_with("..."));
        assert_eq!(truncate_repr(with_cut("'xx'".into(), true)).len(), REPR_MAX);
    }

    #[test]
    fn bytes_longer_than_a_string_are_read_up_to_the_callers_limit() {
        use crate::layout::layout_for;
        use crate::memory::FakeMemory;
        let layout = layout_for(3, 12, false, None).unwrap();
        let o = layout.objects;
        // A 100 000-byte `bytes`, as the line table of a very long module would be.
        let len = 100_000usize;
        let mut obj = vec![0u8; o.bytes_sval + len];
        obj[o.ob_size..o.ob_size + 8].copy_from_slice(&(len as i64).to_le_bytes());
        obj[o.bytes_sval..].fill(0x80);
        let mut mem = FakeMemory::new();
        mem.map(0x10000, obj);
        let reader = ObjectReader::new(&mem, &layout);
        let (all, cut) = reader.read_bytes_prefix(0x10000, 1 << 20).unwrap();
        assert_eq!((all.len(), cut), (len, false));
        let (some, cut) = reader.read_bytes_prefix(0x10000, 10).unwrap();
        assert_eq!((some.len(), cut), (10, true));
    }

    /// Counts reads, to bound the work a lookup does.
    struct Counting<'a>(&'a crate::memory::FakeMemory, std::cell::Cell<usize>);

    impl MemoryReader for Counting<'_> {
        fn read(&self, addr: u64, buf: &mut [u8]) -> crate::memory::ReadResult<()> {
            self.1.set(self.1.get() + 1);
            self.0.read(addr, buf)
        }
    }

    #[test]
    fn an_attribute_lookup_in_a_garbage_dict_scans_a_bounded_number_of_keys() {
        use crate::layout::layout_for;
        use crate::memory::FakeMemory;
        let layout = layout_for(3, 10, false, None).unwrap();
        let (o, d) = (layout.objects, layout.dicts);
        let DictModel::Py36 { dk_size } = d.model else {
            panic!("3.10 dicts")
        };
        let mut mem = FakeMemory::new();
        let put = |block: &mut Vec<u8>, at: usize, v: u64| {
            block[at..at + 8].copy_from_slice(&v.to_le_bytes());
        };
        // A type whose instances keep their __dict__ at +16, named "T".
        let mut tp = vec![0u8; o.tp_dictoffset + 8];
        put(&mut tp, o.tp_name, 0x5000);
        put(&mut tp, o.tp_dictoffset, 16);
        mem.map(0x1000, tp);
        mem.map(0x5000, b"T\0".to_vec());
        // The instance, and a dict whose keys object claims 65 536 entries, all of them the
        // one-character str "x".
        let mut obj = vec![0u8; 24];
        put(&mut obj, o.ob_type, 0x1000);
        put(&mut obj, 16, 0x2000);
        mem.map(0x3000, obj);
        let mut dict = vec![0u8; d.keys.max(d.values) + 8];
        put(&mut dict, d.keys, 0x100_0000);
        mem.map(0x2000, dict);
        let (n, size) = (1usize << 16, 1usize << 16);
        let entries = d.indices + 4 * size;
        let mut keys = vec![0u8; entries + n * d.entry_size];
        put(&mut keys, dk_size, size as u64);
        put(&mut keys, d.nentries, n as u64);
        for i in 0..n {
            put(&mut keys, entries + i * d.entry_size + 8, 0x6000);
            put(&mut keys, entries + i * d.entry_size + 16, 0x6000);
        }
        mem.map(0x100_0000, keys);
        let StrModel::Pep393 {
            length,
            state,
            ascii_size,
            kind_shift,
            compact_bit,
            ascii_bit,
            ..
        } = layout.strings
        else {
            panic!("3.10 strings")
        };
        let mut x = vec![0u8; ascii_size + 2];
        put(&mut x, o.ob_type, 0x7000);
        put(&mut x, length, 1);
        let bits: u32 = 1 << kind_shift | 1 << compact_bit | 1 << ascii_bit;
        x[state..state + 4].copy_from_slice(&bits.to_le_bytes());
        x[ascii_size] = b'x';
        mem.map(0x6000, x);
        let mut str_type = vec![0u8; o.tp_name + 8];
        put(&mut str_type, o.tp_name, 0x8000);
        mem.map(0x7000, str_type);
        mem.map(0x8000, b"str\0".to_vec());

        let counting = Counting(&mem, std::cell::Cell::new(0));
        let reader = ObjectReader::new(&counting, &layout);
        assert_eq!(reader.instance_attr(0x3000, "_name").unwrap(), None);
        let reads = counting.1.get();
        assert!(reads < 4 * MAX_INSTANCE_ATTRS, "{reads} reads");
        // A module namespace may be big: the plain lookup still sees every entry.
        counting.1.set(0);
        assert_eq!(reader.dict_get_str(0x2000, "_name").unwrap(), None);
        assert!(counting.1.get() > n, "{} reads", counting.1.get());
    }

    #[test]
    fn sets_like_python() {
        let parts = ["1".to_string(), "2".to_string()];
        assert_eq!(set_repr("set", &parts, false), "{1, 2}");
        assert_eq!(set_repr("set", &[], false), "set()");
        assert_eq!(set_repr("frozenset", &parts, false), "frozenset({1, 2})");
        assert_eq!(set_repr("frozenset", &[], false), "frozenset()");
        assert_eq!(set_repr("set", &parts, true), "set([1, 2])");
        assert_eq!(set_repr("set", &[], true), "set([])");
        assert_eq!(set_repr("frozenset", &[], true), "frozenset([])");
    }
}
