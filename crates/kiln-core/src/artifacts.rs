//! What a kept file is: its MIME type, from its first bytes (the formats that announce
//! themselves: images, archives, PDF, …) or else its name's extension, else text for UTF-8 and
//! bytes for the rest.

/// The MIME type of a file named `name` holding `content`.
pub fn mime_type(name: &str, content: &[u8]) -> String {
    if let Some(kind) = infer::get(content) {
        return kind.mime_type().to_string();
    }
    if let Some(guess) = mime_guess::from_path(name).first() {
        return guess.essence_str().to_string();
    }
    if std::str::from_utf8(content).is_ok() {
        "text/plain".to_string()
    } else {
        "application/octet-stream".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::mime_type;

    #[test]
    fn contents_then_names_then_text_or_bytes() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        // The bytes win over a misleading name.
        assert_eq!(mime_type("plot.txt", png), "image/png");
        assert_eq!(mime_type("data/out.csv", b"a,b\n1,2\n"), "text/csv");
        assert_eq!(mime_type("result.json", b"{}"), "application/json");
        assert_eq!(mime_type("notes", b"plain words"), "text/plain");
        assert_eq!(
            mime_type("blob", &[0xff, 0xfe, 0x00, 0x81]),
            "application/octet-stream"
        );
    }
}
