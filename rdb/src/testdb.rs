//! A small [`Db`] for unit tests: it records the commands it applied.

use serde::{Deserialize, Serialize};

use crate::Db;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct TestDb {
    pub(crate) cmds: Vec<String>,
}

impl Db for TestDb {
    type Cmd = String;
    /// How many commands have been applied, this one included.
    type Resp = u64;

    fn apply(&mut self, cmd: String) -> u64 {
        self.cmds.push(cmd);
        self.cmds.len() as u64
    }
}
