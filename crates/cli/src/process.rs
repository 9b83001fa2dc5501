//! How a command's process uses memory and how it ends: the two costs of a
//! short command (`teller check`) that are not teller's own work.

#![allow(unsafe_code)]

/// Gives this process small pages only. mimalloc asks for transparent huge
/// pages on its arenas, and the first touch of each then zeroes 2 MiB: about
/// 1 ms of a `teller check` that uses a few hundred KiB. A server keeps
/// them; its heap lives for hours.
pub fn small_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integers and touches no memory. A
    // kernel that refuses (before Linux 3.15) leaves the process slower,
    // never wrong, and before logging starts there is no one to tell.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// Ends the process with `code` once stdout and stderr are flushed, without
/// the loaded libraries' exit handlers: LLVM's (loaded with WasmEdge) tear
/// down thousands of global options, about half a millisecond that helps
/// nothing. Call it only when the command is done: its files are closed
/// and synced, its threads have nothing left to finish.
pub fn exit(code: u8) -> ! {
    use std::io::Write;
    // As Rust's own way out: what was printed in full has been written
    // already (a failed `println!` panics), and a reader that has gone away
    // (a server's log pipe closed) does not make the command fail.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` ends the process; nothing runs after it.
    unsafe { libc::_exit(i32::from(code)) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_pages_turns_transparent_huge_pages_off_for_the_process() {
        super::small_pages();
        // SAFETY: PR_GET_THP_DISABLE takes integers and touches no memory.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }
}
