//! The parts of an ONNX model an importer needs: the initializers (as f32 host tensors) and the
//! nodes (name, op, inputs, outputs, and a `Constant`'s value), read straight from the protobuf
//! wire format. The ONNX schema is stable and only a handful of its fields matter here, so a
//! small reader beats a protobuf code generator and a runtime dependency. Tensors stored in
//! external files are refused by name.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::Dtype;

use super::safetensors::{HostTensor, to_f32};
use crate::{Error, Result};

/// One graph node.
#[derive(Debug, Clone, Default)]
pub struct OnnxNode {
    /// The exporter's scoped name (`/backbone/encoder/layer.0/attention/attention/query/MatMul`).
    pub name: String,
    pub op_type: String,
    /// Value names; an unused optional input is the empty string.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// A `Constant` node's `value` attribute.
    pub value: Option<HostTensor>,
}

/// An ONNX graph's initializers and nodes.
#[derive(Debug, Default)]
pub struct OnnxGraph {
    pub initializers: BTreeMap<String, HostTensor>,
    pub nodes: Vec<OnnxNode>,
}

impl OnnxGraph {
    /// Reads `path` (a `.onnx` model file).
    pub fn read(path: &Path) -> Result<OnnxGraph> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes).map_err(|message| Error::Checkpoint {
            path: path.into(),
            message: format!("not a readable ONNX model: {message}"),
        })
    }

    /// Parses a serialised `ModelProto`.
    pub fn parse(bytes: &[u8]) -> std::result::Result<OnnxGraph, String> {
        let mut graph = None;
        let mut r = Wire::new(bytes);
        while let Some((field, value)) = r.next()? {
            if field == 7 {
                graph = Some(parse_graph(value.bytes("ModelProto.graph")?)?);
            }
        }
        graph.ok_or_else(|| "the file holds no graph (ModelProto field 7)".to_string())
    }

    /// The node that produces value `name`.
    pub fn producer(&self, name: &str) -> Option<&OnnxNode> {
        self.nodes
            .iter()
            .find(|n| n.outputs.iter().any(|o| o == name))
    }

    /// The value of the `Constant` node producing `name`.
    pub fn constant(&self, name: &str) -> Option<&HostTensor> {
        self.producer(name)
            .filter(|n| n.op_type == "Constant")?
            .value
            .as_ref()
    }
}

/// A protobuf field's payload.
enum Value<'a> {
    Varint(u64),
    /// A double or fixed64: no field this reader keeps has one, so only its length matters.
    Fixed64,
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    fn bytes(self, what: &str) -> std::result::Result<&'a [u8], String> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(format!("{what}: expected a length-delimited field")),
        }
    }

    fn string(self, what: &str) -> std::result::Result<String, String> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{what}: not UTF-8"))
    }

    fn varint(self, what: &str) -> std::result::Result<u64, String> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(format!("{what}: expected a varint field")),
        }
    }
}

/// A cursor over protobuf wire-format bytes.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Wire { buf, pos: 0 }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or("truncated varint at the end of a message")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("a {n}-byte field runs past the end of its message"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next `(field number, payload)`, or `None` at the end.
    fn next(&mut self) -> std::result::Result<Option<(u64, Value<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = self.varint()? as usize;
                Value::Bytes(self.take(n)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            w => return Err(format!("unsupported wire type {w} (field {})", key >> 3)),
        };
        Ok(Some((key >> 3, value)))
    }
}

/// Repeated int64 values, packed (one length-delimited field) or not (one varint each).
fn push_int64s(value: Value, out: &mut Vec<i64>, what: &str) -> std::result::Result<(), String> {
    match value {
        Value::Varint(v) => out.push(v as i64),
        Value::Bytes(b) => {
            let mut w = Wire::new(b);
            while w.pos < b.len() {
                out.push(w.varint()? as i64);
            }
        }
        _ => return Err(format!("{what}: expected int64 values")),
    }
    Ok(())
}

fn parse_graph(bytes: &[u8]) -> std::result::Result<OnnxGraph, String> {
    let mut graph = OnnxGraph::default();
    let mut r = Wire::new(bytes);
    while let Some((field, value)) = r.next()? {
        match field {
            1 => graph
                .nodes
                .push(parse_node(value.bytes("GraphProto.node")?)?),
            5 => {
                let (name, t) = parse_tensor(value.bytes("GraphProto.initializer")?)?;
                graph.initializers.insert(name, t);
            }
            _ => {}
        }
    }
    Ok(graph)
}

fn parse_node(bytes: &[u8]) -> std::result::Result<OnnxNode, String> {
    let mut node = OnnxNode::default();
    let mut r = Wire::new(bytes);
    while let Some((field, value)) = r.next()? {
        match field {
            1 => node.inputs.push(value.string("NodeProto.input")?),
            2 => node.outputs.push(value.string("NodeProto.output")?),
            3 => node.name = value.string("NodeProto.name")?,
            4 => node.op_type = value.string("NodeProto.op_type")?,
            5 => {
                if let Some(t) = parse_value_attribute(value.bytes("NodeProto.attribute")?)? {
                    node.value = Some(t);
                }
            }
            _ => {}
        }
    }
    Ok(node)
}

/// A `value` attribute holding a tensor (what a `Constant` node carries); other attributes are
/// skipped.
fn parse_value_attribute(bytes: &[u8]) -> std::result::Result<Option<HostTensor>, String> {
    let (mut name, mut tensor) = (String::new(), None);
    let mut r = Wire::new(bytes);
    while let Some((field, value)) = r.next()? {
        match field {
            1 => name = value.string("AttributeProto.name")?,
            5 => tensor = Some(parse_tensor(value.bytes("AttributeProto.t")?)?.1),
            _ => {}
        }
    }
    Ok(tensor.filter(|_| name == "value"))
}

/// ONNX `TensorProto.DataType` codes this reader converts.
const FLOAT: u64 = 1;
const INT32: u64 = 6;
const INT64: u64 = 7;
const FLOAT16: u64 = 10;
const DOUBLE: u64 = 11;
const BFLOAT16: u64 = 16;

fn parse_tensor(bytes: &[u8]) -> std::result::Result<(String, HostTensor), String> {
    let mut name = String::new();
    let mut dims: Vec<i64> = Vec::new();
    let mut data_type = 0;
    let mut raw: Option<&[u8]> = None;
    let mut floats: Vec<f32> = Vec::new();
    let mut ints: Vec<i64> = Vec::new();
    let mut external = false;
    let mut r = Wire::new(bytes);
    while let Some((field, value)) = r.next()? {
        match field {
            1 => push_int64s(value, &mut dims, "TensorProto.dims")?,
            2 => data_type = value.varint("TensorProto.data_type")?,
            4 => match value {
                Value::Fixed32(v) => floats.push(f32::from_bits(v)),
                Value::Bytes(b) => floats.extend(
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                ),
                _ => return Err("TensorProto.float_data: expected floats".into()),
            },
            5 | 7 => push_int64s(value, &mut ints, "TensorProto.int_data")?,
            8 => name = value.string("TensorProto.name")?,
            9 => raw = Some(value.bytes("TensorProto.raw_data")?),
            14 => external = value.varint("TensorProto.data_location")? == 1,
            _ => {}
        }
    }
    if external {
        return Err(format!(
            "{name}: stored in an external data file, which this reader does not follow"
        ));
    }
    let shape: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    let count: usize = shape.iter().product();
    let values = match raw {
        Some(b) => {
            let f32s = |dtype| to_f32(dtype, b).expect("float dtype");
            match data_type {
                FLOAT => f32s(Dtype::F32),
                FLOAT16 => f32s(Dtype::F16),
                BFLOAT16 => f32s(Dtype::BF16),
                DOUBLE => f32s(Dtype::F64),
                INT64 => b
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect(),
                INT32 => b
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as f32)
                    .collect(),
                t => return Err(format!("{name}: unsupported data type {t}")),
            }
        }
        None if data_type == FLOAT => floats,
        None if data_type == INT64 || data_type == INT32 => {
            ints.iter().map(|&v| v as f32).collect()
        }
        None => return Err(format!("{name}: data type {data_type} without raw_data")),
    };
    if values.len() != count {
        return Err(format!(
            "{name}: {} values for shape {shape:?}",
            values.len()
        ));
    }
    Ok((name, HostTensor { shape, values }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn varint_field(field: u64, v: u64, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(v, out);
    }

    #[test]
    fn reads_initializers_nodes_and_constants() {
        // an initializer [2, 3] f32 in raw_data, with unpacked dims
        let mut init = Vec::new();
        varint_field(1, 2, &mut init);
        varint_field(1, 3, &mut init);
        varint_field(2, FLOAT, &mut init);
        bytes_field(8, b"w", &mut init);
        let raw: Vec<u8> = (0..6)
            .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
            .collect();
        bytes_field(9, &raw, &mut init);
        // a Constant node whose value is int64 [64], dims packed, values in int64_data
        let mut value = Vec::new();
        bytes_field(1, &[1], &mut value); // packed dims [1]
        varint_field(2, INT64, &mut value);
        bytes_field(7, &[64], &mut value); // packed int64_data [64]
        let mut attr = Vec::new();
        bytes_field(1, b"value", &mut attr);
        bytes_field(5, &value, &mut attr);
        let mut node = Vec::new();
        bytes_field(2, b"c_out", &mut node);
        bytes_field(3, b"/scope/Constant", &mut node);
        bytes_field(4, b"Constant", &mut node);
        bytes_field(5, &attr, &mut node);
        let mut graph = Vec::new();
        bytes_field(1, &node, &mut graph);
        bytes_field(5, &init, &mut graph);
        let mut model = Vec::new();
        varint_field(1, 7, &mut model); // ir_version, skipped
        bytes_field(7, &graph, &mut model);

        let g = OnnxGraph::parse(&model).unwrap();
        let w = &g.initializers["w"];
        assert_eq!(w.shape, vec![2, 3]);
        assert_eq!(w.values, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert_eq!(g.nodes[0].name, "/scope/Constant");
        assert_eq!(g.constant("c_out").unwrap().values, vec![64.0]);
        assert!(g.constant("w").is_none());
    }

    #[test]
    fn truncated_and_empty_files_are_errors() {
        assert!(OnnxGraph::parse(&[]).unwrap_err().contains("no graph"));
        let mut model = Vec::new();
        bytes_field(7, &[0x0a, 0x10, 0x01], &mut model); // a node field claiming 16 bytes
        assert!(
            OnnxGraph::parse(&model)
                .unwrap_err()
                .contains("past the end")
        );
    }
}
