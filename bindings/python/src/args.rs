//! Python arguments to Redis arguments and numbers, as Redis clients
//! convert them: `str` as UTF-8, `bytes`/`bytearray`/`memoryview` as is,
//! `int` and `float` as their decimal text (`repr`, like redis-py). Anything
//! else, `bool` and `None` included, is an `InvalidOperation`.

use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};

use crate::error::invalid;

/// The items of a tuple or list; `what` names it in errors.
fn items<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return Ok(tuple.iter().collect());
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return Ok(list.iter().collect());
    }
    Err(invalid(format!(
        "{what} must be a tuple or a list, not {}",
        type_name(obj)
    )))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// One command: `("set", "a", b"v", 1)`.
pub fn command(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<Vec<u8>>> {
    let args = items(obj, what)?;
    if args.is_empty() {
        return Err(invalid(format!(
            "{what} is empty: a command needs at least its name"
        )));
    }
    args.iter()
        .enumerate()
        .map(|(i, arg)| argument(arg, &format!("{what}[{i}]")))
        .collect()
}

/// Several commands: `(("set", "a", "1"), ("incr", "b"))`.
pub fn commands(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<Vec<Vec<u8>>>> {
    let cmds = items(obj, what)?;
    if cmds.is_empty() {
        return Err(invalid(format!(
            "{what} is empty: give at least one command"
        )));
    }
    cmds.iter()
        .enumerate()
        .map(|(i, cmd)| command(cmd, &format!("{what}[{i}]")))
        .collect()
}

/// One argument's bytes.
fn argument(arg: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(s) = arg.cast::<PyString>() {
        return s.to_cow().map(|s| s.as_bytes().to_vec()).map_err(|e| {
            invalid(format!(
                "{what} is a str that cannot be encoded as UTF-8: {e}"
            ))
        });
    }
    if let Ok(b) = arg.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = arg.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    if arg.is_instance_of::<PyMemoryView>() {
        let bytes = arg.call_method0("tobytes")?;
        return Ok(bytes.cast::<PyBytes>()?.as_bytes().to_vec());
    }
    // bool is an int subclass; sending True as "1" hides bugs (redis-py
    // refuses it too).
    if arg.is_instance_of::<PyBool>() {
        return Err(invalid(format!(
            "{what} is a bool; convert it to str, bytes, int or float first"
        )));
    }
    if arg.is_instance_of::<PyInt>() {
        if let Ok(n) = arg.extract::<i64>() {
            return Ok(n.to_string().into_bytes());
        }
        // Larger than 64 bits, or an int subclass: the plain int's text.
        let index = arg.call_method0("__index__")?;
        return Ok(index.repr()?.to_cow()?.as_bytes().to_vec());
    }
    if arg.is_instance_of::<PyFloat>() {
        let value: f64 = arg.extract()?;
        // Python's repr: the shortest text that reads back the same float.
        let text = PyFloat::new(arg.py(), value).repr()?;
        return Ok(text.to_cow()?.as_bytes().to_vec());
    }
    Err(invalid(format!(
        "{what} has type {}; expected str, bytes, int or float",
        type_name(arg)
    )))
}

/// A Redis port (0..=65535).
pub fn port(obj: &Bound<'_, PyAny>) -> PyResult<u16> {
    int_in_range(obj, "port", "0..=65535")
}

/// A Redis db number (0..=4294967295).
pub fn db(obj: &Bound<'_, PyAny>) -> PyResult<u32> {
    int_in_range(obj, "db", "0..=4294967295")
}

fn int_in_range<'py, T>(obj: &Bound<'py, PyAny>, what: &str, range: &str) -> PyResult<T>
where
    T: for<'a> FromPyObject<'a, 'py>,
{
    if !obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyBool>() {
        return Err(invalid(format!(
            "{what} must be an int in {range}, not {}",
            type_name(obj)
        )));
    }
    obj.extract::<T>()
        .map_err(|_| invalid(format!("{what} must be an int in {range}, not {obj}")))
}
