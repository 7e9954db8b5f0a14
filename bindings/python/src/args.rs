//! Python arguments to Redis arguments and numbers, as Redis clients
//! convert them: `str` as UTF-8, `bytes`/`bytearray`/`memoryview` as is,
//! `int` and `float` as their decimal text (`repr`, like redis-py). Anything
//! else, `bool` and `None` included, is an `InvalidOperation`.

use std::fmt;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};
use smallvec::SmallVec;

use crate::error::invalid;

/// One command's arguments: up to eight without an allocation.
pub type Args<'a, 'py> = SmallVec<[Arg<'a, 'py>; 8]>;

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// One argument's bytes: borrowed in place from a `str` (its UTF-8, which
/// CPython keeps with the string: nothing is copied on 3.10+, where the
/// limited API can read it) or a `bytes` object, or, for the rest, owned.
#[derive(Debug)]
pub enum Arg<'a, 'py> {
    /// A `str` or `bytes` item of a tuple: the tuple holds the item, so
    /// not even its reference count is touched.
    Borrowed(&'a [u8]),
    /// A `bytes` item of a list (which may change: the item is held).
    Py(Bound<'py, PyBytes>),
    /// A `str` item of a list.
    Str(PyBackedStr),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Arg<'_, '_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Arg::Borrowed(b) => b,
            Arg::Py(b) => b.as_bytes(),
            Arg::Str(s) => s.as_bytes(),
            Arg::Owned(v) => v,
        }
    }
}

/// What the command being read is called in errors: `cmd`, or `cmds[2]`.
#[derive(Debug, Clone, Copy)]
pub enum Name<'s> {
    Whole(&'s str),
    Item(&'s str, usize),
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Whole(what) => f.write_str(what),
            Name::Item(what, i) => write!(f, "{what}[{i}]"),
        }
    }
}

/// One command: `("set", "a", b"v", 1)`. Its `str` and `bytes` arguments
/// are borrowed from `obj` when it is a tuple.
pub fn command<'a, 'py>(obj: &'a Bound<'py, PyAny>, what: Name<'_>) -> PyResult<Args<'a, 'py>> {
    // Plain loops: collecting through `Result` costs more than the
    // conversions themselves.
    let mut args = Args::new();
    match sequence(obj, what)? {
        Sequence::Tuple(tuple) => {
            for (i, arg) in tuple.iter_borrowed().enumerate() {
                args.push(tuple_argument(arg).map_err(|e| e.context(what, i))?);
            }
        }
        Sequence::List(list) => {
            for (i, arg) in list.iter().enumerate() {
                args.push(argument(arg).map_err(|e| e.context(what, i))?);
            }
        }
    }
    if args.is_empty() {
        return Err(invalid(format!(
            "{what} is empty: a command needs at least its name"
        )));
    }
    Ok(args)
}

/// Several commands, `(("set", "a", "1"), ("incr", "b"))`: the command
/// objects, each for [`command`] (whose arguments borrow from them).
pub fn command_objects<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let cmds: Vec<_> = match sequence(obj, Name::Whole(what))? {
        Sequence::Tuple(tuple) => tuple.iter().collect(),
        Sequence::List(list) => list.iter().collect(),
    };
    if cmds.is_empty() {
        return Err(invalid(format!(
            "{what} is empty: give at least one command"
        )));
    }
    Ok(cmds)
}

/// A command or a list of commands: a tuple or a list, nothing else.
enum Sequence<'a, 'py> {
    Tuple(&'a Bound<'py, PyTuple>),
    List(&'a Bound<'py, PyList>),
}

fn sequence<'a, 'py>(obj: &'a Bound<'py, PyAny>, what: Name<'_>) -> PyResult<Sequence<'a, 'py>> {
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        Ok(Sequence::Tuple(tuple))
    } else if let Ok(list) = obj.cast::<PyList>() {
        Ok(Sequence::List(list))
    } else {
        Err(invalid(format!(
            "{what} must be a tuple or a list, not {}",
            type_name(obj)
        )))
    }
}

/// Why an argument was refused, named once its position is known (no
/// string is formatted for arguments that convert fine).
enum ArgError {
    Py(PyErr),
    Message(&'static str, String),
}

impl From<PyErr> for ArgError {
    fn from(e: PyErr) -> Self {
        ArgError::Py(e)
    }
}

impl ArgError {
    /// A `str` with no UTF-8 form (a lone surrogate).
    fn not_utf8(e: PyErr) -> Self {
        ArgError::Message("is a str that cannot be encoded as UTF-8: ", e.to_string())
    }

    fn context(self, what: Name<'_>, i: usize) -> PyErr {
        match self {
            ArgError::Py(e) => e,
            ArgError::Message(before, after) => invalid(format!("{what}[{i}] {before}{after}")),
        }
    }
}

/// One argument of a tuple: a `str` or `bytes` borrowed, the rest as
/// [`argument`].
fn tuple_argument<'a, 'py>(arg: Borrowed<'a, 'py, PyAny>) -> Result<Arg<'a, 'py>, ArgError> {
    if arg.is_instance_of::<PyString>() {
        return <&str>::extract(arg)
            .map(|s| Arg::Borrowed(s.as_bytes()))
            .map_err(ArgError::not_utf8);
    }
    if let Ok(bytes) = <&[u8]>::extract(arg) {
        return Ok(Arg::Borrowed(bytes));
    }
    argument(arg.to_owned())
}

/// One argument's bytes.
fn argument<'a, 'py>(arg: Bound<'py, PyAny>) -> Result<Arg<'a, 'py>, ArgError> {
    let arg = match arg.cast_into::<PyBytes>() {
        Ok(b) => return Ok(Arg::Py(b)),
        Err(e) => e.into_inner(),
    };
    let arg = match arg.cast_into::<PyString>() {
        Ok(s) => {
            return PyBackedStr::try_from(s)
                .map(Arg::Str)
                .map_err(ArgError::not_utf8);
        }
        Err(e) => e.into_inner(),
    };
    if let Ok(b) = arg.cast::<PyByteArray>() {
        return Ok(Arg::Owned(b.to_vec()));
    }
    if arg.is_instance_of::<PyMemoryView>() {
        let bytes = arg.call_method0("tobytes")?;
        return Ok(Arg::Py(bytes.cast_into::<PyBytes>().map_err(PyErr::from)?));
    }
    // bool is an int subclass; sending True as "1" hides bugs (redis-py
    // refuses it too).
    if arg.is_instance_of::<PyBool>() {
        return Err(ArgError::Message(
            "is a bool; convert it to str, bytes, int or float first",
            String::new(),
        ));
    }
    if arg.is_instance_of::<PyInt>() {
        if let Ok(n) = arg.extract::<i64>() {
            return Ok(Arg::Owned(n.to_string().into_bytes()));
        }
        // Larger than 64 bits, or an int subclass: the plain int's text.
        let index = arg.call_method0("__index__")?;
        return Ok(Arg::Owned(index.repr()?.to_cow()?.as_bytes().to_vec()));
    }
    if arg.is_instance_of::<PyFloat>() {
        let value: f64 = arg.extract()?;
        // Python's repr: the shortest text that reads back the same float.
        let text = PyFloat::new(arg.py(), value).repr()?;
        return Ok(Arg::Owned(text.to_cow()?.as_bytes().to_vec()));
    }
    Err(ArgError::Message(
        "has type ",
        format!("{}; expected str, bytes, int or float", type_name(&arg)),
    ))
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
