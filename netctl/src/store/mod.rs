//! Where the state is kept: a SQLite database (`state.db`, WAL) under `NETCTL_STATE_DIR`
//! that commands, CNI plugin processes and the daemon open at once. A change is made under
//! the host-wide state lock ([`lock`]) and written as one transaction of the rows that
//! changed; readers (`ps`, `inspect`, the daemon) read a consistent moment without the lock.
//! A `state.json` of an older netctl is moved into the database on the first change.

pub mod db;
pub mod lock;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use rusqlite::Connection;

pub use lock::private_dir;

use crate::model::state::{State, STATE_VERSION};

pub const DB_FILE: &str = "state.db";
/// The state before the database: read until the first change moves it in.
const JSON_FILE: &str = "state.json";
/// Where the JSON file goes once moved in (kept, never read again).
const JSON_MIGRATED: &str = "state.json.migrated";

/// The state directory, its database and its lock.
pub struct Store {
    dir: PathBuf,
    timeout: Duration,
}

/// The state, read under the exclusive lock; the lock is released on drop.
pub struct Locked {
    state: State,
    /// The state as the database has it, while `state` differs from it (taken when the
    /// state is first changed: a copy of a big state costs).
    saved: Option<State>,
    /// Containers whose ports have no packed copy yet (see [`db::pack_missing`]).
    unpacked: std::collections::BTreeSet<String>,
    /// The generation of what is saved (one more per save: nobody else writes while the
    /// lock is held).
    generation: u64,
    /// The previous holder of the lock died holding it: it may have left kernel objects the
    /// state does not know.
    pub interrupted: bool,
    conn: Connection,
    /// None once [`Locked::unlock`] let it go.
    lock: Option<lock::StateLock>,
}

impl Store {
    /// The store in `dir`, whose lock a command waits for at most `timeout`
    /// (`Config::lock_timeout`).
    pub fn new(dir: &Path, timeout: Duration) -> Self {
        Self {
            dir: dir.to_path_buf(),
            timeout,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }

    /// Takes the lock (waiting for other netctl commands, at most the timeout) and reads
    /// the state. The first change on a host makes the database (from `state.json` when an
    /// older netctl left one).
    pub fn lock(&self) -> Result<Locked> {
        let lock = lock::take(&self.dir, self.timeout)?;
        if !self.db_path().exists() {
            self.make_database()?;
        }
        let mut conn = db::open(&self.db_path(), self.timeout)?;
        db::upgrade(&mut conn).with_context(|| {
            format!("upgrading the state database {}", self.db_path().display())
        })?;
        let db::Loaded {
            state,
            generation,
            unpacked,
        } = self.load(&mut conn)?;
        Ok(Locked {
            state,
            saved: None,
            unpacked,
            generation,
            interrupted: lock.interrupted,
            conn,
            lock: Some(lock),
        })
    }

    /// Reads the state without the lock (for read-only commands and the daemon): one
    /// consistent moment, never a change half made.
    pub fn snapshot(&self) -> Result<State> {
        Ok(self.snapshot_at()?.0)
    }

    /// [`Store::snapshot`] and the generation it is (0 before the first change).
    pub fn snapshot_at(&self) -> Result<(State, u64)> {
        if !self.db_path().exists() {
            return Ok((read_json(&self.dir.join(JSON_FILE))?, 0));
        }
        let mut conn = db::open(&self.db_path(), self.timeout)?;
        let loaded = self.load(&mut conn)?;
        Ok((loaded.state, loaded.generation))
    }

    /// The generation of the last change (0 before the first).
    pub fn generation(&self) -> Result<u64> {
        if !self.db_path().exists() {
            return Ok(0);
        }
        db::generation(&db::open(&self.db_path(), self.timeout)?)
    }

    fn load(&self, conn: &mut Connection) -> Result<db::Loaded> {
        let path = self.db_path();
        let loaded = db::load(conn).with_context(|| {
            format!(
                "state database {} is unreadable; it was left untouched: repair or move it away",
                path.display()
            )
        })?;
        loaded.state.validate().with_context(|| {
            format!(
                "state database {} is inconsistent; it was left untouched: repair or move it away",
                path.display()
            )
        })?;
        Ok(loaded)
    }

    /// The database, made beside and renamed into place (a command killed half way leaves
    /// no half database), holding what `state.json` had; the JSON file is then kept as
    /// `state.json.migrated`.
    fn make_database(&self) -> Result<()> {
        let json = self.dir.join(JSON_FILE);
        let state = read_json(&json)?;
        let tmp = self.dir.join("state.db.new");
        for leftover in ["state.db.new", "state.db.new-wal", "state.db.new-shm"] {
            let _ = fs::remove_file(self.dir.join(leftover));
        }
        db::create(&tmp, &state)?;
        fs::rename(&tmp, self.db_path())
            .with_context(|| format!("creating {}", self.db_path().display()))?;
        sync_dir(&self.dir)?;
        if json.exists() {
            fs::rename(&json, self.dir.join(JSON_MIGRATED))
                .with_context(|| format!("moving {} aside", json.display()))?;
            eprintln!(
                "netctl: moved the state from {} into {} (the old file is kept as {JSON_MIGRATED})",
                json.display(),
                self.db_path().display()
            );
        }
        Ok(())
    }
}

impl Locked {
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The state, to change; [`Locked::save`] writes what changed.
    pub fn state_mut(&mut self) -> &mut State {
        if self.saved.is_none() {
            self.saved = Some(self.state.clone());
        }
        &mut self.state
    }

    /// The state as saved.
    pub fn saved(&self) -> &State {
        self.saved.as_ref().unwrap_or(&self.state)
    }

    /// The state differs from what is saved.
    pub fn changed(&self) -> bool {
        self.saved.as_ref().is_some_and(|s| *s != self.state)
    }

    /// The generation of what is saved, for the daemon to acknowledge.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Forgets the changes not saved.
    pub fn roll_back(&mut self) {
        if let Some(saved) = self.saved.take() {
            self.state = saved;
        }
    }

    pub fn into_state(self) -> State {
        self.state
    }

    /// Lets the lock go before the end (for work after the change that must not hold up
    /// other commands); nothing may be saved after this.
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    /// Like [`Locked::save`] for a change that only matters until the next reboot (a
    /// process's pid): it survives the command being killed, and a power cut may lose it
    /// (the process goes too). Its commit does not wait for the disk: the next synced
    /// commit carries it there.
    pub fn save_for_this_boot(&mut self) -> Result<State> {
        self.conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
        let saved = self.save();
        self.conn.execute_batch("PRAGMA synchronous = FULL;")?;
        saved
    }

    /// Writes the rows that changed, in one transaction; returns the state as it was
    /// saved before.
    pub fn save(&mut self) -> Result<State> {
        if self.lock.is_none() {
            anyhow::bail!("the state lock was let go: nothing more can be saved");
        }
        let Some(old) = self.saved.take() else {
            return Ok(self.state.clone());
        };
        let written = (|| -> Result<()> {
            let tx = self.conn.transaction()?;
            db::write_changes(&tx, &old, &self.state)?;
            db::pack_missing(&tx, &self.state, &self.unpacked)?;
            tx.commit()?;
            Ok(())
        })();
        match written {
            Ok(()) => {
                self.unpacked.clear();
                self.generation += 1;
                Ok(old)
            }
            Err(e) => {
                self.saved = Some(old);
                Err(e).context("saving the state")
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// The state as an older netctl kept it (an empty state when there is none).
fn read_json(path: &Path) -> Result<State> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(State {
                version: STATE_VERSION,
                ..Default::default()
            })
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let state: State = serde_json::from_str(&text).with_context(|| {
        format!(
            "state file {} is unreadable; it was left untouched: repair or move it away",
            path.display()
        )
    })?;
    if state.version != STATE_VERSION {
        bail!(
            "state file {} has version {}, this netctl reads version {STATE_VERSION}",
            path.display(),
            state.version
        );
    }
    state.validate().with_context(|| {
        format!(
            "state file {} is inconsistent; it was left untouched: repair or move it away",
            path.display()
        )
    })?;
    Ok(state)
}

#[cfg(test)]
mod tests;
