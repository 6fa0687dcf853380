//! DER error codes: DAOS's names and numbers, negated on the wire as DAOS does.
//!
//! An error that crosses a process boundary is a [`DaosError`]: a code and a
//! message naming the thing and the value. Over gRPC it travels as a status whose
//! metadata key [`DER_METADATA_KEY`] holds the code, so clients can branch on it.

use std::fmt;

/// gRPC metadata key carrying the DER code of a failed call.
pub const DER_METADATA_KEY: &str = "daos-der";

macro_rules! ders {
    ($($name:ident = $num:expr, $desc:expr;)*) => {
        /// A DAOS error number. The wire value is the negated number, as in DAOS.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum Der {
            $($name,)*
        }

        impl Der {
            /// All known codes.
            pub const ALL: &'static [Der] = &[$(Der::$name,)*];

            /// The positive DAOS number (e.g. 1005 for DER_NONEXIST).
            pub fn number(self) -> i32 {
                match self { $(Der::$name => $num,)* }
            }

            /// DAOS's name, e.g. `DER_NONEXIST`.
            pub fn name(self) -> &'static str {
                match self { $(Der::$name => concat!("DER_", stringify!($name)),)* }
            }

            /// DAOS's description of the code.
            pub fn desc(self) -> &'static str {
                match self { $(Der::$name => $desc,)* }
            }
        }
    };
}

ders! {
    NO_PERM = 1001, "Operation not permitted";
    NO_HDL = 1002, "Invalid handle";
    INVAL = 1003, "Invalid parameters";
    EXIST = 1004, "Entity already exists";
    NONEXIST = 1005, "The specified entity does not exist";
    UNREACH = 1006, "Unreachable node";
    NOSPACE = 1007, "No space on storage target";
    ALREADY = 1008, "Operation already performed";
    NOMEM = 1009, "Out of memory";
    NOSYS = 1010, "Function not implemented";
    TIMEDOUT = 1011, "Time out";
    BUSY = 1012, "Device or resource busy";
    AGAIN = 1013, "Try again";
    PROTO = 1014, "Incompatible protocol";
    UNINIT = 1015, "Device or resource not initialized";
    TRUNC = 1016, "Buffer too short";
    OVERFLOW = 1017, "Data too long for defined data type or buffer size";
    CANCELED = 1018, "Operation canceled";
    MISC = 1025, "Miscellaneous error";
    BADPATH = 1026, "Bad path name";
    NOTDIR = 1027, "Not a directory";
    MISMATCH = 1031, "Version mismatch";
    IO = 2001, "I/O error";
    NOTLEADER = 2008, "Not service leader";
    SHUTDOWN = 2017, "Service should shut down";
    INPROGRESS = 2018, "Operation now in progress";
    NOTREPLICA = 2020, "Not a service replica";
    CSUM = 2021, "Checksum error";
    AGENT_INCOMPAT = 2029, "Agent is incompatible with libdaos";
}

impl Der {
    /// The value sent on the wire: the negated number.
    pub fn code(self) -> i32 {
        -self.number()
    }

    /// Looks a wire code up; accepts the negated (wire) or positive form.
    pub fn from_code(code: i32) -> Option<Der> {
        let n = code.checked_abs()?;
        Der::ALL.iter().copied().find(|d| d.number() == n)
    }
}

impl fmt::Display for Der {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}): {}", self.name(), self.code(), self.desc())
    }
}

/// An error that crosses a process boundary: a DER code and what it was about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {der}")]
pub struct DaosError {
    pub der: Der,
    pub msg: String,
}

impl DaosError {
    pub fn new(der: Der, msg: impl Into<String>) -> Self {
        DaosError {
            der,
            msg: msg.into(),
        }
    }

    /// Builds the gRPC status for this error, with the DER code in metadata.
    pub fn to_status(&self) -> tonic::Status {
        let code = match self.der {
            Der::NONEXIST => tonic::Code::NotFound,
            Der::EXIST => tonic::Code::AlreadyExists,
            Der::NO_PERM => tonic::Code::PermissionDenied,
            Der::INVAL => tonic::Code::InvalidArgument,
            Der::NOSPACE => tonic::Code::ResourceExhausted,
            Der::TIMEDOUT => tonic::Code::DeadlineExceeded,
            Der::NOTLEADER | Der::UNREACH | Der::AGAIN | Der::BUSY => tonic::Code::Unavailable,
            Der::NOSYS => tonic::Code::Unimplemented,
            _ => tonic::Code::Internal,
        };
        let mut st = tonic::Status::new(code, self.msg.clone());
        if let Ok(v) = self.der.code().to_string().parse() {
            st.metadata_mut().insert(DER_METADATA_KEY, v);
        }
        st
    }

    /// Recovers a DaosError from a gRPC status. A status without a DER code
    /// (a transport failure, say) maps to the closest DER code.
    pub fn from_status(st: &tonic::Status) -> Self {
        let der = st
            .metadata()
            .get(DER_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<i32>().ok())
            .and_then(Der::from_code);
        let der = der.unwrap_or(match st.code() {
            tonic::Code::Unavailable => Der::UNREACH,
            tonic::Code::DeadlineExceeded => Der::TIMEDOUT,
            tonic::Code::NotFound => Der::NONEXIST,
            tonic::Code::AlreadyExists => Der::EXIST,
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => Der::NO_PERM,
            tonic::Code::InvalidArgument => Der::INVAL,
            tonic::Code::Unimplemented => Der::NOSYS,
            _ => Der::MISC,
        });
        DaosError::new(der, st.message().to_string())
    }

    /// Checks a `status` field of a response message.
    pub fn check(status: i32, what: &str) -> Result<(), DaosError> {
        if status == 0 {
            return Ok(());
        }
        let der = Der::from_code(status).unwrap_or(Der::MISC);
        Err(DaosError::new(der, what.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daos_numbers() {
        assert_eq!(Der::NONEXIST.code(), -1005);
        assert_eq!(Der::EXIST.code(), -1004);
        assert_eq!(Der::NO_PERM.code(), -1001);
        assert_eq!(Der::NOSPACE.code(), -1007);
        assert_eq!(Der::TIMEDOUT.code(), -1011);
        assert_eq!(
            Der::NONEXIST.to_string(),
            "DER_NONEXIST(-1005): The specified entity does not exist"
        );
    }

    #[test]
    fn codes_round_trip_and_are_unique() {
        for d in Der::ALL {
            assert_eq!(Der::from_code(d.code()), Some(*d));
            assert_eq!(
                Der::ALL.iter().filter(|o| o.number() == d.number()).count(),
                1
            );
        }
        assert_eq!(Der::from_code(0), None);
        assert_eq!(Der::from_code(i32::MIN), None);
    }

    #[test]
    fn status_round_trip() {
        let e = DaosError::new(Der::NOSPACE, "pool \"tank\": 8 GB requested, 2 GB free");
        let back = DaosError::from_status(&e.to_status());
        assert_eq!(back, e);
    }
}
