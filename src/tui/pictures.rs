//! Pictures in the thread: which ones to ask the manager for and at what size, the decoded
//! ones ready to draw (one per message, at the size last asked), and drawing them with the
//! terminal's best protocol (kitty, iTerm2, sixel; half-blocks elsewhere and in tests).
//!
//! Owns the `ratatui-image` picker and encoded pictures. Decoding and scaling happen in the
//! manager (`Command::Preview`), off the screen's thread; only the encoding of an image
//! already at its final size happens here. Must not read files or the clock.

use std::collections::HashMap;
use std::sync::Arc;

use image::RgbaImage;
use ratatui::Frame;
use ratatui::layout::{Rect, Size};
use ratatui_image::picker::Picker;
use ratatui_image::protocol::Protocol;
use ratatui_image::{Image, Resize};

use crate::client::manager::Command;

/// The most rows a picture takes in the thread.
pub const ROWS: u16 = 8;
/// The most columns a picture takes.
pub const MAX_COLS: u16 = 40;

/// A picture encoded for the terminal.
#[derive(Clone)]
pub struct Encoded(Arc<Protocol>);

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.size();
        write!(f, "Encoded({}x{} cells)", s.width, s.height)
    }
}

/// What is known of a message's picture.
#[derive(Debug, Clone)]
pub struct Picture {
    /// Its size in pixels, as the file says.
    pub width: u32,
    pub height: u32,
    encoded: Option<Encoded>,
}

impl Picture {
    /// The rows it takes on screen, once it can be drawn.
    pub fn rows(&self) -> Option<u16> {
        self.encoded.as_ref().map(|e| e.0.size().height)
    }
}

/// The pictures of the open thread.
#[derive(Debug, Clone)]
pub struct Pictures {
    picker: Picker,
    shown: HashMap<String, Picture>,
    /// The cells each picture was last asked for (0×0: its size only).
    asked: HashMap<String, (u16, u16)>,
}

impl Default for Pictures {
    fn default() -> Self {
        Pictures::new(Picker::halfblocks())
    }
}

impl Pictures {
    /// With the picker the terminal loop found by querying the terminal.
    pub fn new(picker: Picker) -> Pictures {
        Pictures {
            picker,
            shown: HashMap::new(),
            asked: HashMap::new(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Picture> {
        self.shown.get(id)
    }

    /// Forgets message `id`'s picture (it expired or was deleted): nothing of it stays in
    /// memory.
    pub fn forget(&mut self, id: &str) {
        self.shown.remove(id);
        self.asked.remove(id);
    }

    /// Forgets every picture (another thread opened).
    pub fn clear(&mut self) {
        self.shown.clear();
        self.asked.clear();
    }

    /// The cells a picture gets in a thread `width` columns wide: it never reaches past the
    /// middle, where a message's text may begin.
    pub fn cells(width: usize) -> (u16, u16) {
        ((width / 2).min(MAX_COLS as usize) as u16, ROWS)
    }

    /// The command that asks for message `id`'s picture to fit `cells`, unless it was asked
    /// for at that size already; `(0, 0)` asks for its size only.
    pub fn want(&mut self, id: &str, cells: (u16, u16)) -> Option<Command> {
        if self.asked.get(id) == Some(&cells) || cells.0 == 0 && self.shown.contains_key(id) {
            return None;
        }
        self.asked.insert(id.to_string(), cells);
        let font = self.picker.font_size();
        Some(Command::Preview {
            id: id.to_string(),
            max_w: u32::from(cells.0) * u32::from(font.width),
            max_h: u32::from(cells.1) * u32::from(font.height),
        })
    }

    /// The manager's answer: encode the picture for the cells it was asked for. Returns the
    /// error to show when it cannot be encoded.
    pub fn arrived(
        &mut self,
        id: String,
        width: u32,
        height: u32,
        image: Option<Arc<RgbaImage>>,
    ) -> Result<(), String> {
        let Some(&(cols, rows)) = self.asked.get(&id) else {
            // For a thread no longer open.
            return Ok(());
        };
        let encoded = match image {
            Some(image) if cols > 0 && rows > 0 => {
                let image = image::DynamicImage::ImageRgba8((*image).clone());
                let p = self
                    .picker
                    .new_protocol(image, Size::new(cols, rows), Resize::Fit(None))
                    .map_err(|e| format!("cannot show the picture: {e}"))?;
                Some(Encoded(Arc::new(p)))
            }
            _ => None,
        };
        self.shown.insert(
            id,
            Picture {
                width,
                height,
                encoded,
            },
        );
        Ok(())
    }

    /// Draws message `id`'s picture at `at` (its top-left cell), clipped to `within`.
    pub fn draw(&self, f: &mut Frame, id: &str, at: (u16, u16), within: Rect) {
        let Some(Encoded(p)) = self.shown.get(id).and_then(|p| p.encoded.as_ref()) else {
            return;
        };
        let size = p.size();
        let area = Rect::new(at.0, at.1, size.width, size.height).intersection(within);
        // A picture partly scrolled out is not drawn: sixel cannot be cut.
        if area.width == size.width && area.height == size.height {
            f.render_widget(Image::new(p), area);
        }
    }
}
