//! A hostile picture cannot make the receiver allocate what its header declares: decoding a
//! PNG that claims 40000×40000 pixels (6.4 GB as RGBA) is refused from the header, and the
//! most memory held meanwhile is measured with a counting allocator. A 1×1 picture decodes.
//!
//! One test in this file, so that no other test's allocations run in the measured window.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};

use sotto::client::attachment::preview::{self, PreviewError};

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NOW.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most memory held above what was held before `f` ran.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = NOW.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst) - before)
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(width, height, image::Rgba([200, 30, 30, 255]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid 1×1 PNG whose header (IHDR, with a correct CRC) says `width` × `height`.
fn declared_png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(1, 1);
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn one_pixel_decodes_and_a_huge_declared_size_allocates_nothing_like_it() {
    const BOUND: usize = 4 * 1024 * 1024;
    let small = png(1, 1);
    let (img, held) = peak_during(|| preview::decode(Cursor::new(&small), 400, 160));
    assert_eq!(img.unwrap().dimensions(), (1, 1));
    assert!(held < BOUND, "a 1×1 picture held {held} bytes");

    let hostile = declared_png(40_000, 40_000);
    assert!(hostile.len() < 100);
    let (refused, held) = peak_during(|| preview::decode(Cursor::new(&hostile), 400, 160));
    match refused {
        Err(PreviewError::TooManyPixels { width, height }) => {
            assert_eq!((width, height), (40_000, 40_000))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        held < BOUND,
        "a 40000×40000 header made it hold {held} bytes"
    );
    let (dims, held) = peak_during(|| preview::dimensions(Cursor::new(&hostile)));
    assert!(dims.unwrap_err().to_string().contains("40000×40000"));
    assert!(held < BOUND, "{held}");
}
