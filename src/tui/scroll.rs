//! Where the thread view is scrolled to, and how keys move it: by lines (wheel), by a screen
//! (PageUp/PageDown), to the oldest loaded (Home), to the first unread (on open) or back to
//! the bottom (End).
//!
//! Pure arithmetic over a position and a function giving each loaded message's height in
//! lines (with its separators): knows no widgets, no messages and no manager.

/// The bottom edge of the view: `below` whole messages are under it, and the last `cut`
/// lines of the message just above them are hidden too. The default is the bottom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub below: usize,
    pub cut: usize,
}

/// A thread of `len` loaded messages whose message `i` is `height(i)` lines tall; above the
/// oldest is one more line (the "start of the conversation"/"loading" marker).
pub struct Lines<F: Fn(usize) -> usize> {
    pub len: usize,
    pub height: F,
}

impl<F: Fn(usize) -> usize> Lines<F> {
    fn h(&self, i: usize) -> usize {
        (self.height)(i).max(1)
    }

    /// Moves the view `n` lines towards older messages, stopping where the top of the thread
    /// fills the first line of a `view`-line window.
    pub fn up(&self, mut p: Pos, mut n: usize, view: usize) -> Pos {
        while n > 0 && p.below < self.len {
            let i = self.len - p.below - 1;
            let shown = self.h(i) - p.cut;
            if n < shown {
                p.cut += n;
                break;
            }
            n -= shown;
            if i == 0 {
                p.cut = self.h(0) - 1;
                break;
            }
            p.below += 1;
            p.cut = 0;
        }
        self.clamp(p, view)
    }

    /// Moves the view `n` lines towards newer messages, stopping at the bottom.
    pub fn down(&self, mut p: Pos, mut n: usize) -> Pos {
        while n > 0 {
            if p.cut > 0 {
                let d = n.min(p.cut);
                p.cut -= d;
                n -= d;
            } else if p.below > 0 {
                p.below -= 1;
                p.cut = self.h(self.len - p.below - 1) - 1;
                n -= 1;
            } else {
                break;
            }
        }
        p
    }

    /// The position whose top line is the first line of message `first` (`extra` lines above
    /// it included), or the bottom when everything from there on fits in `view` lines.
    pub fn from_top(&self, first: usize, extra: usize, view: usize) -> Pos {
        let mut total = extra;
        for j in first..self.len {
            total += self.h(j);
            if total >= view {
                return Pos {
                    below: self.len - j - 1,
                    cut: total - view,
                };
            }
        }
        Pos::default()
    }

    /// The oldest loaded message (and the marker above it) at the top of the view.
    pub fn top(&self, view: usize) -> Pos {
        self.from_top(0, 1, view)
    }

    /// Keeps the view from showing empty lines above the top of the thread.
    fn clamp(&self, p: Pos, view: usize) -> Pos {
        let end = self.len - p.below.min(self.len);
        let mut above = 1;
        for i in (0..end).rev() {
            above += self.h(i) - if i + 1 == end { p.cut } else { 0 };
            if above >= view {
                return p;
            }
        }
        self.top(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten messages of three lines each.
    fn ten() -> Lines<impl Fn(usize) -> usize> {
        Lines {
            len: 10,
            height: |_| 3,
        }
    }

    #[test]
    fn up_and_down_are_inverse_by_lines() {
        let t = ten();
        let p = t.up(Pos::default(), 7, 5);
        assert_eq!(p, Pos { below: 2, cut: 1 });
        assert_eq!(t.down(p, 7), Pos::default());
        // Down never goes past the bottom.
        assert_eq!(t.down(p, 100), Pos::default());
    }

    #[test]
    fn the_top_is_a_limit_and_fills_the_view() {
        let t = ten();
        // 31 lines in all (the marker + 30): a 5-line view at the top ends 26 lines up.
        let top = t.up(Pos::default(), 1000, 5);
        assert_eq!(top, t.top(5));
        assert_eq!(top, Pos { below: 8, cut: 2 });
        assert_eq!(t.up(top, 1, 5), top);
    }

    #[test]
    fn landing_puts_a_message_at_the_top_unless_the_rest_fits() {
        let t = ten();
        assert_eq!(t.from_top(4, 0, 7), Pos { below: 3, cut: 2 });
        assert_eq!(t.from_top(8, 0, 7), Pos::default());
    }
}
