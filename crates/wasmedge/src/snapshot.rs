//! A guest's state as a new instance has it once `init` has run, ready to
//! be put back into any instance of the same module: what a new instance
//! costs (about 100 µs in WasmEdge) becomes a reset of a few microseconds,
//! and a Rego guest's later instances start with the policy already parsed.
//!
//! A guest qualifies when its whole state is its memory and its mutable
//! globals ([`crate::instrument`] checks and marks it). The memory's bytes
//! go into a sealed memfd, and an instance's first reset maps it over the
//! instance's memory, private and copy-on-write. From then on only the pages
//! the guest wrote differ from the image, and each is a private copy: the
//! kernel lists them (`PAGEMAP_SCAN`, Linux 6.7) and the reset copies the
//! image's bytes back into them. Those pages stay the instance's own, so the
//! next call writes them without a fault; a copy-on-write fault costs a TLB
//! flush on every core the process runs on, which made dropping the pages
//! (`MADV_DONTNEED`) and faulting them in again 3 times slower on one
//! thread and 12 times on two (`teller-bench call`). Where the kernel
//! cannot list them, or too many were written, the written pages are
//! dropped instead. The globals are set back through WasmEdge. A memory
//! that has grown since the snapshot is not reset: its instance is dropped.

#![allow(unsafe_code)]

use crate::ffi;
use crate::raw::{self, RawError};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// One module's state after instantiation (and its `init` call).
pub(crate) struct Snapshot {
    /// The memory's bytes, sealed against any change.
    image: OwnedFd,
    /// The image mapped read-only, to copy written pages back from.
    view: *const u8,
    pages: u32,
    globals: Vec<ffi::WasmEdge_Value>,
}

// SAFETY: `view` is a read-only mapping owned by the snapshot, only read.
unsafe impl Send for Snapshot {}
// SAFETY: as for `Send`: nothing writes through `view`.
unsafe impl Sync for Snapshot {}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if !self.view.is_null() {
            // SAFETY: the snapshot's own mapping of its length.
            unsafe { libc::munmap(self.view.cast_mut().cast(), self.len()) };
        }
    }
}

const PAGE: usize = 65536;

/// Past this many bytes of written pages, a reset drops them rather than
/// copy them back, so an instance that once wrote much of its memory does
/// not pay for it on every reset.
const MAX_COPY: usize = 256 << 10;

/// The ranges of written pages one reset copies back at most.
const MAX_REGIONS: usize = 32;

fn os_error(what: &str) -> RawError {
    RawError {
        code: 0,
        message: format!("{what}: {}", std::io::Error::last_os_error()),
    }
}

impl Snapshot {
    /// The state of `instance`, when it is one that can be reset.
    pub(crate) fn take(instance: &raw::Instance) -> Result<Option<Snapshot>, RawError> {
        let Some(globals) = instance.global_values() else {
            return Ok(None);
        };
        let (Some(bytes), Some(pages)) = (instance.memory_bytes(), instance.memory_pages()) else {
            return Ok(None);
        };
        // SAFETY: a NUL-terminated name; the descriptor is checked and then
        // owned.
        let image = unsafe {
            let fd = libc::memfd_create(
                c"teller-guest-snapshot".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            );
            if fd < 0 {
                return Err(os_error("memfd_create"));
            }
            OwnedFd::from_raw_fd(fd)
        };
        let mut file = std::fs::File::from(image);
        file.write_all(bytes).map_err(|e| RawError {
            code: 0,
            message: format!("writing a guest's snapshot: {e}"),
        })?;
        let image = OwnedFd::from(file);
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: an owned descriptor.
        if unsafe { libc::fcntl(image.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(os_error("sealing a guest's snapshot"));
        }
        let mut snapshot = Snapshot {
            image,
            view: std::ptr::null(),
            pages,
            globals,
        };
        if snapshot.len() > 0 {
            // SAFETY: a new read-only shared mapping of the sealed image,
            // owned (and unmapped) by the snapshot.
            let view = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    snapshot.len(),
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    snapshot.image.as_raw_fd(),
                    0,
                )
            };
            if view == libc::MAP_FAILED {
                return Err(os_error("mapping a guest's snapshot"));
            }
            snapshot.view = view.cast();
        }
        Ok(Some(snapshot))
    }

    fn len(&self) -> usize {
        self.pages as usize * PAGE
    }

    /// Puts the snapshot's state into `instance`, an instance of the
    /// snapshot's module. `mapped` says whether its memory is a mapping of
    /// this snapshot already, and is set when it becomes one. On an error
    /// the instance's state is undefined: drop it.
    pub(crate) fn restore(
        &self,
        instance: &mut raw::Instance,
        mapped: &mut bool,
    ) -> Result<(), RawError> {
        let pages = instance.memory_pages().ok_or_else(|| RawError {
            code: 0,
            message: "the guest exports no memory".into(),
        })?;
        if pages > self.pages {
            return Err(RawError {
                code: 0,
                message: format!(
                    "its memory grew from {} to {pages} pages, past its snapshot",
                    self.pages
                ),
            });
        }
        if pages < self.pages {
            instance.grow_memory(self.pages - pages)?;
            *mapped = false;
        }
        // The memory is the snapshot's size now.
        let (base, len) = match instance.memory_bytes_mut() {
            Some(memory) => (memory.as_mut_ptr(), memory.len()),
            None => (std::ptr::null_mut(), 0),
        };
        if len > 0 {
            // SAFETY: `base..base + len` is the instance's memory, which no
            // guest code uses meanwhile (`&mut`) and which WasmEdge keeps at
            // this address for the instance's life (it grows a memory in
            // place): replacing its pages with a private mapping of
            // the image, or dropping the pages written to that mapping,
            // changes only their contents, to the snapshot's.
            unsafe {
                if *mapped {
                    self.put_back(base, len)?;
                } else {
                    let at = libc::mmap(
                        base.cast(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_FIXED,
                        self.image.as_raw_fd(),
                        0,
                    );
                    if at != base.cast() {
                        return Err(os_error("mapping a guest's snapshot"));
                    }
                    *mapped = true;
                }
            }
        }
        instance.set_global_values(&self.globals)
    }

    /// Makes the written pages of `base..base + len`, a private mapping of
    /// the image, read as the image again.
    ///
    /// # Safety
    /// As in [`Snapshot::restore`].
    unsafe fn put_back(&self, base: *mut u8, len: usize) -> Result<(), RawError> {
        let mut regions = [PageRegion::default(); MAX_REGIONS];
        if let Some(regions) = written(base, len, &mut regions).and_then(|n| regions.get(..n)) {
            let bytes: usize = regions.iter().map(|r| (r.end - r.start) as usize).sum();
            if bytes <= MAX_COPY {
                for r in regions {
                    let offset = r.start as usize - base as usize;
                    let size = (r.end - r.start) as usize;
                    // SAFETY: both ranges lie within `len` bytes of their
                    // mappings (the kernel listed them within the range
                    // asked for), and do not overlap.
                    unsafe {
                        std::ptr::copy_nonoverlapping(self.view.add(offset), base.add(offset), size)
                    };
                }
                return Ok(());
            }
        }
        // SAFETY: as the caller promises.
        if unsafe { libc::madvise(base.cast(), len, libc::MADV_DONTNEED) } != 0 {
            return Err(os_error("resetting a guest's memory"));
        }
        Ok(())
    }
}

/// `struct page_region` of `PAGEMAP_SCAN`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `struct pm_scan_arg` of `PAGEMAP_SCAN`.
#[repr(C)]
struct ScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC000_0000 | (96 << 16) | (0x66 << 8) | 16;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;

/// The process's page map, opened once; `None` where it cannot be.
fn pagemap() -> Option<&'static std::fs::File> {
    static PAGEMAP: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    PAGEMAP
        .get_or_init(|| std::fs::File::open("/proc/self/pagemap").ok())
        .as_ref()
}

/// The ranges of `base..base + len` that are private copies, present or
/// swapped out: in a private mapping of a file, the pages written since it
/// was mapped (or since they were last dropped). How many ranges `out`
/// received; `None` when the kernel cannot say (before 6.7) or there were
/// more ranges than `out` holds.
fn written(base: *mut u8, len: usize, out: &mut [PageRegion]) -> Option<usize> {
    let pagemap = pagemap()?;
    let end = base as u64 + len as u64;
    let mut arg = ScanArg {
        size: std::mem::size_of::<ScanArg>() as u64,
        flags: 0,
        start: base as u64,
        end,
        walk_end: 0,
        vec: out.as_mut_ptr() as u64,
        vec_len: out.len() as u64,
        max_pages: 0,
        category_inverted: PAGE_IS_FILE,
        category_mask: PAGE_IS_FILE,
        category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        return_mask: PAGE_IS_FILE | PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
    };
    // SAFETY: `arg` is the kernel's `pm_scan_arg`, `vec` points to
    // `vec_len` writable `page_region`s; the call only reads the page map.
    let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
    // A full `out` that stopped short of the end may have missed some.
    if n < 0 || (n as usize == out.len() && arg.walk_end < end) {
        return None;
    }
    Some(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel lists exactly the pages written to a private mapping of
    /// a file, as ranges.
    #[test]
    fn the_written_pages_of_a_private_mapping_are_listed() {
        let page = 4096;
        let len = 16 * page;
        let file = tempfile::tempfile().unwrap();
        file.set_len(len as u64).unwrap();
        // SAFETY: a new private mapping of `len` bytes of the file, unmapped
        // at the end of the test.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base.cast::<u8>();
        // SAFETY: all within the mapping.
        unsafe {
            std::ptr::read_volatile(base.add(page));
            for p in [3, 7, 8] {
                base.add(p * page + 5).write_volatile(1);
            }
        }
        let mut regions = [PageRegion::default(); MAX_REGIONS];
        let n = written(base, len, &mut regions).expect("PAGEMAP_SCAN (Linux 6.7) is missing");
        let listed: Vec<(usize, usize)> = regions[..n]
            .iter()
            .map(|r| {
                let at = |a: u64| (a as usize - base as usize) / page;
                (at(r.start), at(r.end))
            })
            .collect();
        assert_eq!(listed, [(3, 4), (7, 9)]);
        // SAFETY: the test's own mapping.
        unsafe { libc::munmap(base.cast(), len) };
    }
}
