//! Client errors as Python exceptions.
//!
//! The exception classes are defined in Python (`intc/_errors.py`) so that
//! they can also derive from the matching built-in exceptions
//! (`ProxyUnavailable` is a `ConnectionError`, `InvalidOperation` and
//! `FrameTooLarge` are `ValueError`s); this module imports them lazily.

use intc_client::ClientError;
use pyo3::PyErr;

pyo3::import_exception!(intc._errors, IntcError);
pyo3::import_exception!(intc._errors, ProxyUnavailable);
pyo3::import_exception!(intc._errors, FrameTooLarge);
pyo3::import_exception!(intc._errors, InvalidOperation);

/// The Python exception for a client error, with the full message.
pub fn to_py(error: ClientError) -> PyErr {
    let message = error.to_string();
    match error {
        ClientError::Unavailable { .. }
        | ClientError::Io { .. }
        | ClientError::Unconfirmed { .. } => ProxyUnavailable::new_err(message),
        ClientError::TooLarge { .. } => FrameTooLarge::new_err(message),
        ClientError::Frame(_) | ClientError::Bson { .. } | ClientError::InvalidArgument(_) => {
            InvalidOperation::new_err(message)
        }
    }
}

/// An `InvalidOperation` with `message`.
pub fn invalid(message: impl Into<String>) -> PyErr {
    InvalidOperation::new_err(message.into())
}
