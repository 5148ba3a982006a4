//! libzfs_core, the stable library under the `zfs` command, for the three operations whose
//! command line cannot batch.
//!
//! `zfs hold` and `zfs release` issue one ioctl per snapshot, and every ioctl is a sync task
//! that waits for a transaction group; `zfs destroy` takes one bookmark. `lzc_hold`,
//! `lzc_release` and `lzc_destroy_bookmarks` take lists: one ioctl and one transaction group for
//! a whole pool's batch, however many snapshots it names.
//!
//! The library is loaded at run time (`libzfs_core.so.3` and `libnvpair.so.3`, which every
//! OpenZFS 2.x install ships with its command line), so the binary has no build-time or link-time
//! dependency on OpenZFS and runs unchanged where they are missing. Every call here is only a
//! fast path: a batch this module does not complete cleanly (any error, any entry in the error
//! list) is redone by the caller with the command line, whose idempotency rules and error
//! messages stay the single definition of behaviour.
//!
//! # Safety of the FFI
//! Every `unsafe` block below relies on the same facts, stated once here and referred to at
//! each block as "FFI contract":
//! 1. The function types match the C prototypes of `libzfs_core.h` and `libnvpair.h`, which are
//!    a stable public ABI (unchanged since OpenZFS 0.6.4):
//!    `int nvlist_alloc(nvlist_t **, uint_t, int)`, `void nvlist_free(nvlist_t *)`,
//!    `int nvlist_add_string(nvlist_t *, const char *, const char *)`,
//!    `int nvlist_add_boolean(nvlist_t *, const char *)`,
//!    `int nvlist_add_nvlist(nvlist_t *, const char *, nvlist_t *)` (copies its argument),
//!    `nvpair_t *nvlist_next_nvpair(nvlist_t *, nvpair_t *)`, `char *nvpair_name(nvpair_t *)`,
//!    `int nvpair_value_int32(nvpair_t *, int32_t *)`, `int libzfs_core_init(void)`,
//!    `int lzc_hold(nvlist_t *, int, nvlist_t **)`, `int lzc_release(nvlist_t *, nvlist_t **)`,
//!    `int lzc_destroy_bookmarks(nvlist_t *, nvlist_t **)`.
//! 2. The libraries stay loaded for the life of the process (they live in a `static`), so the
//!    function pointers copied out of them stay valid.
//! 3. Every `nvlist_t *` passed in is a live list allocated by `nvlist_alloc` and owned by an
//!    [`NvList`], freed exactly once by its `Drop`; an error list handed back by an `lzc_*` call
//!    is either NULL or a list the caller owns, wrapped at once. Strings passed in are
//!    NUL-terminated `CString`s that outlive the call; the library copies what it keeps.
//! 4. libzfs_core is thread-safe once `libzfs_core_init` succeeded (its `/dev/zfs` descriptor
//!    is shared under a mutex and ioctls on it may run concurrently); an nvlist is only ever used
//!    by the thread that owns it.

use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::sync::OnceLock;

#[repr(C)]
struct RawNvList {
    _opaque: [u8; 0],
}

#[repr(C)]
struct RawNvPair {
    _opaque: [u8; 0],
}

type NvlistAlloc = unsafe extern "C" fn(*mut *mut RawNvList, c_uint, c_int) -> c_int;
type NvlistFree = unsafe extern "C" fn(*mut RawNvList);
type NvlistAddString = unsafe extern "C" fn(*mut RawNvList, *const c_char, *const c_char) -> c_int;
type NvlistAddBoolean = unsafe extern "C" fn(*mut RawNvList, *const c_char) -> c_int;
type NvlistAddNvlist = unsafe extern "C" fn(*mut RawNvList, *const c_char, *mut RawNvList) -> c_int;
type NvlistNextNvpair = unsafe extern "C" fn(*mut RawNvList, *mut RawNvPair) -> *mut RawNvPair;
type NvpairName = unsafe extern "C" fn(*mut RawNvPair) -> *const c_char;
type NvpairValueInt32 = unsafe extern "C" fn(*mut RawNvPair, *mut i32) -> c_int;
type LzcInit = unsafe extern "C" fn() -> c_int;
type LzcHold = unsafe extern "C" fn(*mut RawNvList, c_int, *mut *mut RawNvList) -> c_int;
type LzcWithErrors = unsafe extern "C" fn(*mut RawNvList, *mut *mut RawNvList) -> c_int;

/// `NV_UNIQUE_NAME`: adding a name again replaces the earlier pair.
const NV_UNIQUE_NAME: c_uint = 1;

/// The loaded libraries and the functions used from them.
pub(crate) struct Lzc {
    _nvpair: libloading::Library,
    _core: libloading::Library,
    nvlist_alloc: NvlistAlloc,
    nvlist_free: NvlistFree,
    nvlist_add_string: NvlistAddString,
    nvlist_add_boolean: NvlistAddBoolean,
    nvlist_add_nvlist: NvlistAddNvlist,
    nvlist_next_nvpair: NvlistNextNvpair,
    nvpair_name: NvpairName,
    nvpair_value_int32: NvpairValueInt32,
    lzc_hold: LzcHold,
    lzc_release: LzcWithErrors,
    lzc_destroy_bookmarks: LzcWithErrors,
}

/// Why a batch was not completed by libzfs_core: the call's return value and the entries of its
/// error list (name, errno). The caller falls back to the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LzcFailure {
    pub errno: i32,
    pub errors: Vec<(String, i32)>,
}

impl std::fmt::Display for LzcFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "errno {}", self.errno)?;
        for (name, e) in self.errors.iter().take(5) {
            write!(f, "; {name}: errno {e}")?;
        }
        Ok(())
    }
}

static LOADED: OnceLock<Option<Lzc>> = OnceLock::new();

/// The process-wide libzfs_core, if it can be loaded and `/dev/zfs` opened (checked once).
pub(crate) fn get() -> Option<&'static Lzc> {
    LOADED.get_or_init(|| Lzc::load().ok()).as_ref()
}

/// Copies a function pointer out of `lib`.
///
/// # Safety
/// `T` must be the exact function pointer type of the C symbol `name` (FFI contract 1).
unsafe fn symbol<T: Copy>(lib: &libloading::Library, name: &[u8]) -> Result<T, String> {
    // SAFETY: the caller guarantees the type; the pointer is used only while `lib` is loaded
    // (FFI contract 2: `Lzc` keeps the library alive next to the pointer).
    unsafe { lib.get::<T>(name) }
        .map(|s| *s)
        .map_err(|e| e.to_string())
}

fn open_first(names: &[&str]) -> Result<libloading::Library, String> {
    let mut why = Vec::new();
    for n in names {
        // SAFETY: loading a shared library runs its initialisers; libnvpair and libzfs_core
        // are plain C libraries of the installed OpenZFS whose initialisers only set up
        // internal state.
        match unsafe { libloading::Library::new(*n) } {
            Ok(l) => return Ok(l),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(why.join("; "))
}

impl Lzc {
    fn load() -> Result<Lzc, String> {
        if !std::path::Path::new("/dev/zfs").exists() {
            return Err("no /dev/zfs".into());
        }
        let nvpair = open_first(&["libnvpair.so.3", "libnvpair.so"])?;
        let core = open_first(&["libzfs_core.so.3", "libzfs_core.so"])?;
        // SAFETY: each type alias matches its C prototype (FFI contract 1).
        let lzc = unsafe {
            Lzc {
                nvlist_alloc: symbol(&nvpair, b"nvlist_alloc\0")?,
                nvlist_free: symbol(&nvpair, b"nvlist_free\0")?,
                nvlist_add_string: symbol(&nvpair, b"nvlist_add_string\0")?,
                nvlist_add_boolean: symbol(&nvpair, b"nvlist_add_boolean\0")?,
                nvlist_add_nvlist: symbol(&nvpair, b"nvlist_add_nvlist\0")?,
                nvlist_next_nvpair: symbol(&nvpair, b"nvlist_next_nvpair\0")?,
                nvpair_name: symbol(&nvpair, b"nvpair_name\0")?,
                nvpair_value_int32: symbol(&nvpair, b"nvpair_value_int32\0")?,
                lzc_hold: symbol(&core, b"lzc_hold\0")?,
                lzc_release: symbol(&core, b"lzc_release\0")?,
                lzc_destroy_bookmarks: symbol(&core, b"lzc_destroy_bookmarks\0")?,
                _nvpair: nvpair,
                _core: core,
            }
        };
        // SAFETY: FFI contract 1; opens /dev/zfs once for the process (never closed: the
        // library stays loaded until exit).
        let init: LzcInit = unsafe { symbol(&lzc._core, b"libzfs_core_init\0")? };
        // SAFETY: FFI contract 1.
        let rc = unsafe { init() };
        if rc != 0 {
            return Err(format!("libzfs_core_init failed with errno {rc}"));
        }
        Ok(lzc)
    }

    fn new_list(&self) -> Result<NvList<'_>, LzcFailure> {
        let mut p: *mut RawNvList = std::ptr::null_mut();
        // SAFETY: FFI contract 1; `p` is a valid out-pointer.
        let rc = unsafe { (self.nvlist_alloc)(&mut p, NV_UNIQUE_NAME, 0) };
        if rc != 0 || p.is_null() {
            return Err(failure(rc.max(1)));
        }
        Ok(NvList { lzc: self, ptr: p })
    }

    /// One `lzc_hold`: `holds` are (snapshot, tag), all snapshots in one pool. `Ok` only if
    /// every hold was created (none failed, no snapshot missing).
    pub(crate) fn hold(&self, holds: &[(String, String)]) -> Result<(), LzcFailure> {
        let list = self.new_list()?;
        for (snap, tag) in holds {
            let (s, t) = (cstring(snap)?, cstring(tag)?);
            // SAFETY: FFI contract 1 and 3.
            check(unsafe { (self.nvlist_add_string)(list.ptr, s.as_ptr(), t.as_ptr()) })?;
        }
        let mut errs: *mut RawNvList = std::ptr::null_mut();
        // SAFETY: FFI contract 1, 3, 4; -1: no cleanup descriptor (the holds stay).
        let rc = unsafe { (self.lzc_hold)(list.ptr, -1, &mut errs) };
        self.outcome(rc, errs)
    }

    /// One `lzc_release`: `holds` are (snapshot, tag), all snapshots in one pool. `Ok` only if
    /// every named hold existed and was released.
    pub(crate) fn release(&self, holds: &[(String, String)]) -> Result<(), LzcFailure> {
        let mut by_snap: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (snap, tag) in holds {
            by_snap.entry(snap).or_default().push(tag);
        }
        let list = self.new_list()?;
        for (snap, tags) in by_snap {
            let inner = self.new_list()?;
            for t in tags {
                let t = cstring(t)?;
                // SAFETY: FFI contract 1 and 3.
                check(unsafe { (self.nvlist_add_boolean)(inner.ptr, t.as_ptr()) })?;
            }
            let s = cstring(snap)?;
            // SAFETY: FFI contract 1 and 3; the library copies `inner`, which we still free.
            check(unsafe { (self.nvlist_add_nvlist)(list.ptr, s.as_ptr(), inner.ptr) })?;
        }
        let mut errs: *mut RawNvList = std::ptr::null_mut();
        // SAFETY: FFI contract 1, 3, 4.
        let rc = unsafe { (self.lzc_release)(list.ptr, &mut errs) };
        // A tag the snapshot does not have is reported as `<snapshot>#<tag>` ENOENT while the
        // others are released: success for us, as the CLI's "no such tag" is.
        self.outcome(rc, errs).or_else(|f| {
            let only_missing_tags =
                f.errno == 0 && f.errors.iter().all(|(n, e)| is_missing_tag(n, *e));
            if only_missing_tags {
                Ok(())
            } else {
                Err(f)
            }
        })
    }

    /// One `lzc_destroy_bookmarks`: full bookmark names, all in one pool. Bookmarks that do not
    /// exist are ignored by OpenZFS (so this is idempotent).
    pub(crate) fn destroy_bookmarks(&self, bookmarks: &[String]) -> Result<(), LzcFailure> {
        let list = self.new_list()?;
        for b in bookmarks {
            let b = cstring(b)?;
            // SAFETY: FFI contract 1 and 3.
            check(unsafe { (self.nvlist_add_boolean)(list.ptr, b.as_ptr()) })?;
        }
        let mut errs: *mut RawNvList = std::ptr::null_mut();
        // SAFETY: FFI contract 1, 3, 4.
        let rc = unsafe { (self.lzc_destroy_bookmarks)(list.ptr, &mut errs) };
        self.outcome(rc, errs)
    }

    /// Success only if the call returned 0 and left no error list entries.
    fn outcome(&self, rc: c_int, errs: *mut RawNvList) -> Result<(), LzcFailure> {
        let errs = (!errs.is_null()).then_some(NvList {
            lzc: self,
            ptr: errs,
        });
        let errors = errs.as_ref().map(|l| l.int32_pairs()).unwrap_or_default();
        if rc == 0 && errors.is_empty() {
            Ok(())
        } else {
            Err(LzcFailure { errno: rc, errors })
        }
    }
}

/// An owned nvlist, freed on drop.
struct NvList<'a> {
    lzc: &'a Lzc,
    ptr: *mut RawNvList,
}

impl NvList<'_> {
    /// (name, value) of every pair whose value is an int32 (an error list's entries).
    fn int32_pairs(&self) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        let mut pair: *mut RawNvPair = std::ptr::null_mut();
        loop {
            // SAFETY: FFI contract 1 and 3; `pair` is NULL or a pair of this live list.
            pair = unsafe { (self.lzc.nvlist_next_nvpair)(self.ptr, pair) };
            if pair.is_null() {
                return out;
            }
            // SAFETY: FFI contract 1; `pair` is a pair of this list, its name a NUL-terminated
            // string owned by the list, copied before the list can change.
            let name = unsafe {
                let n = (self.lzc.nvpair_name)(pair);
                if n.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(n).to_string_lossy().into_owned()
                }
            };
            let mut v: i32 = 0;
            // SAFETY: FFI contract 1; a pair of another type returns an error, not a value.
            let rc = unsafe { (self.lzc.nvpair_value_int32)(pair, &mut v) };
            out.push((name, if rc == 0 { v } else { -1 }));
        }
    }
}

impl Drop for NvList<'_> {
    fn drop(&mut self) {
        // SAFETY: FFI contract 3: `ptr` is a live list owned by this value, freed only here.
        unsafe { (self.lzc.nvlist_free)(self.ptr) }
    }
}

/// An `lzc_release` error-list entry for a hold tag that does not exist (ENOENT, named
/// `<snapshot>#<tag>`); a missing snapshot is named without `#`.
fn is_missing_tag(name: &str, errno: i32) -> bool {
    errno == 2 && name.contains('#')
}

fn failure(errno: i32) -> LzcFailure {
    LzcFailure {
        errno,
        errors: Vec::new(),
    }
}

fn check(rc: c_int) -> Result<(), LzcFailure> {
    if rc == 0 {
        Ok(())
    } else {
        Err(failure(rc))
    }
}

/// Names were validated before they got here; a NUL byte would be a bug, reported as EINVAL.
fn cstring(s: &str) -> Result<CString, LzcFailure> {
    CString::new(s).map_err(|_| failure(22))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_display_lists_first_entries() {
        let f = LzcFailure {
            errno: 17,
            errors: vec![("p/a@s".into(), 17), ("p/b@s".into(), 2)],
        };
        assert_eq!(f.to_string(), "errno 17; p/a@s: errno 17; p/b@s: errno 2");
    }

    #[test]
    fn release_tolerates_only_missing_tags() {
        assert!(is_missing_tag("p/f@s#zrepl_STEP_J_a", 2));
        assert!(!is_missing_tag("p/f@s", 2));
        assert!(!is_missing_tag("p/f@s#tag", 16));
    }

    #[test]
    fn cstring_rejects_nul() {
        assert_eq!(cstring("a\0b").unwrap_err().errno, 22);
        assert!(cstring("pool/fs@s").is_ok());
    }
}
