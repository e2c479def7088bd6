//! Property tests of the `format` parser: any text parses or is a typed
//! error, and a well-formed field line gives back its name, offset and size.

use proptest::prelude::*;

use super::*;

/// Lines that look like a format file's, mangled, and arbitrary ones.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\tfield:[a-z_ *\\[\\]0-9]{0,16};\\toffset:-?[0-9]{0,12};\\tsize:[0-9]{0,12};\\tsigned:[01];",
        "print fmt: .{0,20}__print_symbolic\\(REC->[a-z]{1,3}, *(\\{ *(0x)?[0-9a-fA-Z]{0,20}, *\"?[A-Z_]{0,5}\"? *\\}?,? *){0,4}\\)?",
        "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_parses_or_is_a_bad_field(lines in proptest::collection::vec(line(), 0..8)) {
        match Format::parse(&lines.join("\n")) {
            Ok(f) => {
                let _ = f.symbols("a");
                let _ = f.symbols("state");
                if let Some(field) = f.fields.first() {
                    prop_assert_eq!(f.offset(&field.name, field.size), Ok(field.offset));
                }
            }
            Err(e) => prop_assert!(matches!(e, FormatError::BadField { .. }), "{e:?}"),
        }
    }

    #[test]
    fn a_field_line_gives_back_its_name_offset_and_size(
        name in "[a-z_][a-z0-9_]{0,15}",
        len in proptest::option::of(1u32..64),
        offset: u32,
        size: u32,
    ) {
        let decl = len.map_or_else(|| format!("int {name}"), |n| format!("__u8 {name}[{n}]"));
        let text = format!("format:\n\tfield:{decl};\toffset:{offset};\tsize:{size};\tsigned:0;\n");
        let f = Format::parse(&text).unwrap();
        prop_assert_eq!(f.offset(&name, size), Ok(offset));
    }
}
