//! Server-drawn SVG: the 2FA QR code and the usage bar charts. Colours are
//! presentation attributes (no `style`), so the strict CSP holds.

use super::pages::esc;
use crate::admin::AdminError;

/// The QR code of an `otpauth://` URI, dark on white with a quiet zone.
pub fn qr(uri: &str, label: &str) -> Result<String, AdminError> {
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| AdminError::Internal(format!("QR code: {e}")))?;
    let width = code.width();
    let colors = code.to_colors();
    let quiet = 4;
    let size = width + 2 * quiet;
    let mut d = String::new();
    for (i, c) in colors.iter().enumerate() {
        if *c == qrcode::Color::Dark {
            let (x, y) = (i % width + quiet, i / width + quiet);
            d.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"qr\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {size} {size}\" width=\"{}\" height=\"{}\" shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#ffffff\"/><path d=\"{d}\" fill=\"#000000\"/></svg>",
        esc(label),
        size * 6,
        size * 6
    ))
}

/// A bar chart of `(label, value)`, with the values written above the bars
/// and a text title for screen readers.
pub fn bars(title: &str, data: &[(String, u64)]) -> String {
    let max = data.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let (bar, gap, height, top, bottom) = (36usize, 12usize, 120u64, 18usize, 22usize);
    let width = data.len().max(1) * (bar + gap) + gap;
    let total_h = height as usize + top + bottom;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {width} {total_h}\" width=\"{width}\" height=\"{total_h}\"><title>{}</title>",
        esc(title),
        esc(title)
    );
    out.push_str(&format!(
        "<line x1=\"0\" y1=\"{}\" x2=\"{width}\" y2=\"{}\" stroke=\"#444444\"/>",
        top + height as usize,
        top + height as usize
    ));
    for (i, (label, v)) in data.iter().enumerate() {
        let h = (v * height / max) as usize;
        let x = gap + i * (bar + gap);
        let y = top + height as usize - h;
        out.push_str(&format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\" fill=\"#1f5fa8\"><title>{}: {v}</title></rect>",
            esc(label)
        ));
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#111111\">{v}</text>",
            x + bar / 2,
            y.saturating_sub(4).max(11)
        ));
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#111111\">{}</text>",
            x + bar / 2,
            total_h - 6,
            esc(label)
        ));
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_an_svg_without_style() {
        let s = qr("otpauth://totp/TokenHub:ann?secret=ABC", "2FA QR code").unwrap();
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(!s.contains("style"));
        assert!(s.contains("M4 4h1v1h-1z"), "the finder pattern starts at the quiet zone");
    }

    #[test]
    fn bars_scale_to_the_largest_value() {
        let s = bars("requests <per> day", &[("12-01".into(), 10), ("12-02".into(), 5)]);
        assert!(s.contains("height=\"120\""));
        assert!(s.contains("height=\"60\""));
        assert!(s.contains("requests &lt;per&gt; day"));
        assert!(!s.contains("style"));
    }
}
