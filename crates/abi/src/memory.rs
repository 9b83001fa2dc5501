//! A guest memory held by the host, with a bump allocator standing in for
//! `cabi_realloc`: lets tests, benchmarks and fuzzers drive lowering and
//! lifting without an engine.

use super::AbiError;
use super::lower::GuestAlloc;

/// Linear memory in a `Vec`, growing as the allocator needs.
#[derive(Debug, Clone)]
pub struct VecMemory {
    pub bytes: Vec<u8>,
    next: usize,
}

impl VecMemory {
    pub fn new() -> Self {
        // Start past 0 so a null pointer is never handed out.
        VecMemory {
            bytes: vec![0; 1 << 16],
            next: 8,
        }
    }

    /// Forgets every allocation (the bytes stay).
    pub fn reset(&mut self) {
        self.next = 8;
    }
}

impl Default for VecMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestAlloc for VecMemory {
    fn realloc(&mut self, old_ptr: u32, _old: u32, align: u32, size: u32) -> Result<u32, AbiError> {
        if old_ptr != 0 {
            return Err(AbiError("VecMemory only allocates".into()));
        }
        let align = (align as usize).max(1);
        let ptr = self.next.div_ceil(align) * align;
        let end = ptr
            .checked_add(size as usize)
            .filter(|end| *end <= u32::MAX as usize)
            .ok_or_else(|| AbiError("out of memory".into()))?;
        if end > self.bytes.len() {
            self.bytes.resize(end.next_power_of_two(), 0);
        }
        self.next = end;
        Ok(ptr as u32)
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), AbiError> {
        let at = ptr as usize;
        self.bytes
            .get_mut(at..at + bytes.len())
            .ok_or_else(|| AbiError("write out of bounds".into()))?
            .copy_from_slice(bytes);
        Ok(())
    }
}
