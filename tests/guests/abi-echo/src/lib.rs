//! Test guest for teller's canonical ABI: echoes or transforms values of
//! every WIT type so the host can check both directions on both engines.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        world: "abi-echo",
        path: "wit",
    });

    #[cfg(target_arch = "wasm32")]
    use super::Echo;
    #[cfg(target_arch = "wasm32")]
    export!(Echo with_types_in self);
}

use bindings::exports::test::abi::all::{Color, Everything, Guest, Perms, Shape};
use bindings::exports::test::abi::misbehave;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Echo;

static CALLS: AtomicU32 = AtomicU32::new(0);

impl misbehave::Guest for Echo {
    fn count() -> u32 {
        CALLS.fetch_add(1, Ordering::Relaxed) + 1
    }

    #[allow(clippy::panic)]
    fn boom() {
        panic!("boom, as asked");
    }
}

impl Guest for Echo {
    fn roundtrip(e: Everything) -> Everything {
        e
    }

    fn show(e: Everything) -> String {
        format!("{e:?}")
    }

    fn flat(
        s: Shape,
        _o: Option<String>,
        _r: Result<u32, String>,
        _w: Option<Option<u8>>,
        _c: Color,
        _p: Perms,
    ) -> Shape {
        s
    }

    #[allow(clippy::too_many_arguments)]
    fn many(
        a: u64,
        b: u64,
        c: u64,
        d: u64,
        e: u64,
        f: u64,
        g: u64,
        h: u64,
        i: u64,
        j: u64,
        k: u64,
        l: u64,
        m: u64,
        n: u64,
        o: u64,
        p: u64,
        q: u64,
    ) -> u64 {
        [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q]
            .iter()
            .zip(1u64..)
            .fold(0u64, |sum, (v, w)| sum.wrapping_add(v.wrapping_mul(w)))
    }

    fn text(s: String) -> String {
        s.chars().rev().collect()
    }

    fn colors(c: Vec<Color>) -> Vec<Color> {
        c.into_iter().rev().collect()
    }

    fn scalars(a: i8, b: u16, c: f32, d: f64, e: char, f: bool) -> (i8, u16, f32, f64, char, bool) {
        (a, b, c, d, e, f)
    }

    fn halve(x: f32) -> f32 {
        x / 2.0
    }

    fn succ(c: char) -> char {
        char::from_u32(c as u32 + 1).unwrap_or('?')
    }
}
