//! YAML for cloud-init, which reads it with PyYAML, a YAML 1.1 parser.
//!
//! serde_yaml (and its forks) emit a string plainly when a YAML 1.2
//! reader would read it back as a string; YAML 1.1 readers resolve more
//! plain scalars: `yes`, `no`, `on` and `off` are booleans, `0b101` is a
//! number, `2001-12-14` is a date. A node named `yes` would get the host
//! name `True`. So the typed model is turned into a `serde_yaml::Value` by
//! serde, and that tree is emitted event by event through libyaml (the
//! libyaml-safer port) with the scalar style chosen here: every string in
//! quotes, or as a literal block (`|`) when it spans lines; keys (field
//! names of the model) and booleans and numbers plain. libyaml picks a
//! quoting that keeps every character (double quotes for control
//! characters), so no string can be misread by any YAML reader.

use libyaml_safer::{Emitter, Encoding, Event, MappingStyle, ScalarStyle, SequenceStyle};
use serde_yaml::Value;

/// Why a model could not be emitted.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// serde could not turn the model into a YAML tree.
    #[error("building the YAML tree: {0}")]
    Serde(#[from] serde_yaml::Error),
    /// libyaml refused an event.
    #[error("emitting YAML: {0}")]
    Emit(#[from] libyaml_safer::Error),
    /// The model holds something cloud-config has no use for.
    #[error("emitting YAML: unsupported value in the model: {0}")]
    Unsupported(&'static str),
}

/// `value` serialised as one YAML document, without `---` or `...`.
pub fn to_string<T: serde::Serialize>(value: &T) -> Result<String, YamlError> {
    let tree = serde_yaml::to_value(value)?;
    let mut out = Vec::new();
    {
        let mut emitter = Emitter::new();
        emitter.set_output_string(&mut out);
        emitter.set_unicode(true);
        // Never fold long lines (SSH keys are long single words anyway).
        emitter.set_width(-1);
        emitter.set_indent(2);
        emitter.emit(Event::stream_start(Encoding::Utf8))?;
        emitter.emit(Event::document_start(None, &[], true))?;
        emit(&mut emitter, &tree, false)?;
        emitter.emit(Event::document_end(true))?;
        emitter.emit(Event::stream_end())?;
        emitter.flush()?;
    }
    // The emitter only writes what it was given, which is UTF-8 text.
    String::from_utf8(out).map_err(|_| YamlError::Unsupported("non-UTF-8 output"))
}

fn scalar(text: &str, style: ScalarStyle) -> Event {
    Event::scalar(None, None, text, true, true, style)
}

fn emit(e: &mut Emitter<'_>, value: &Value, is_key: bool) -> Result<(), YamlError> {
    match value {
        Value::Null => return Err(YamlError::Unsupported("null")),
        Value::Tagged(_) => return Err(YamlError::Unsupported("tagged value")),
        Value::Bool(b) => e.emit(scalar(
            if *b { "true" } else { "false" },
            ScalarStyle::Plain,
        ))?,
        Value::Number(n) => e.emit(scalar(&n.to_string(), ScalarStyle::Plain))?,
        Value::String(s) => {
            let style = if is_key && is_identifier(s) {
                ScalarStyle::Plain
            } else if s.contains('\n') {
                ScalarStyle::Literal
            } else {
                ScalarStyle::SingleQuoted
            };
            e.emit(scalar(s, style))?;
        }
        Value::Sequence(items) => {
            e.emit(Event::sequence_start(
                None,
                None,
                true,
                SequenceStyle::Block,
            ))?;
            for item in items {
                emit(e, item, false)?;
            }
            e.emit(Event::sequence_end())?;
        }
        Value::Mapping(map) => {
            e.emit(Event::mapping_start(None, None, true, MappingStyle::Block))?;
            for (k, v) in map {
                emit(e, k, true)?;
                emit(e, v, false)?;
            }
            e.emit(Event::mapping_end())?;
        }
    }
    Ok(())
}

/// Keys like `write_files`: lower-case letters and `_`, never special in
/// any YAML version.
fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn strings_that_yaml_1_1_would_misread_are_quoted() {
        let tricky = [
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "true",
            "null",
            "~",
            "0b1010",
            "0600",
            "1_000",
            "12345",
            "1.5",
            "1e3",
            "0x1f",
            "2001-12-14",
            "<<",
            "=",
            "-",
            "a: b",
            "#x",
            "",
        ];
        let doc: BTreeMap<String, Vec<&str>> = [("values".to_string(), tricky.to_vec())].into();
        let text = to_string(&doc).unwrap();
        for (line, want) in text.lines().skip(1).zip(tricky) {
            let quoted = format!("- '{}'", want.replace('\'', "''"));
            assert_eq!(line, quoted, "{text}");
        }
        let back: BTreeMap<String, Vec<String>> = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back["values"], tricky);
    }

    #[test]
    fn multi_line_strings_are_literal_blocks_that_read_back_unchanged() {
        for content in [
            "line 1\nline 2\n",
            "no final newline\nx",
            "two final newlines\n\n",
            "  leading spaces\nx\n",
        ] {
            let doc: BTreeMap<&str, &str> = [("content", content)].into();
            let text = to_string(&doc).unwrap();
            assert!(text.starts_with("content: |"), "{text}");
            let back: BTreeMap<String, String> = serde_yaml::from_str(&text).unwrap();
            assert_eq!(back["content"], content, "{text}");
        }
    }

    #[test]
    fn text_with_tabs_is_double_quoted_and_reads_back_unchanged() {
        // libyaml allows no tabs in block scalars.
        let content = "[Global]\n\tauth-url = https://keystone\n";
        let doc: BTreeMap<&str, &str> = [("content", content)].into();
        let text = to_string(&doc).unwrap();
        assert_eq!(
            text,
            "content: \"[Global]\\n\\tauth-url = https://keystone\\n\"\n"
        );
        let back: BTreeMap<String, String> = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back["content"], content);
    }

    #[test]
    fn control_characters_are_escaped_in_double_quotes() {
        let doc: BTreeMap<&str, &str> = [("x", "bell\u{7}")].into();
        let text = to_string(&doc).unwrap();
        assert_eq!(text, "x: \"bell\\a\"\n");
    }

    #[test]
    fn booleans_and_numbers_stay_plain() {
        let doc: BTreeMap<&str, serde_yaml::Value> = [("a", true.into()), ("b", 3.into())].into();
        assert_eq!(to_string(&doc).unwrap(), "a: true\nb: 3\n");
    }
}
