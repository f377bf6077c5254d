//! What one wake-up of a thread costs on this machine: two threads hand a counter back and
//! forth through a mutex and a condvar, and the round trips' wall and CPU time are printed.
//! Standard library only.
//!
//! Run: `rustc -O docs/probes/handoff.rs -o /tmp/handoff && /tmp/handoff`, and
//! `taskset -c 0 /tmp/handoff` for both threads on one core.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
fn main() {
    let n = 20000;
    let pair = Arc::new((Mutex::new(0u64), Condvar::new()));
    let p2 = pair.clone();
    let t = std::thread::spawn(move || {
        let (m, c) = &*p2;
        for i in 0..n {
            let mut g = m.lock().unwrap();
            while *g != 2 * i + 1 {
                g = c.wait(g).unwrap();
            }
            *g += 1;
            c.notify_one();
        }
    });
    let (m, c) = &*pair;
    let (t0, c0) = (Instant::now(), cpu_ticks());
    for i in 0..n {
        let mut g = m.lock().unwrap();
        *g = 2 * i + 1;
        c.notify_one();
        while *g != 2 * i + 2 {
            g = c.wait(g).unwrap();
        }
    }
    t.join().unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks() - c0) as f64 / 100.0;
    println!(
        "{n} round trips: wall {:.1} us each, CPU {:.1} us each (two wake-ups and two sleeps per trip)",
        wall / n as f64 * 1e6,
        cpu / n as f64 * 1e6
    );
}
