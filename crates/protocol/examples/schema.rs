//! Prints the JSON Schema of the wire protocol: `scripts/generate-schema.sh` writes it to
//! docs/protocol.schema.json, and the test suite checks that file against these types.

fn main() {
    print!("{}", roomstate_protocol::schema::document());
}
