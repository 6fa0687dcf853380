//! Directory streams: `readdir` completeness, stability while entries change, `telldir` /
//! `seekdir` resumption, `rewinddir`.
//!
//! POSIX: an entry added or removed after `opendir` may or may not be returned, but every entry
//! present throughout must be returned exactly once, and `seekdir(telldir())` returns to the
//! same place in the stream.

use std::collections::HashMap;
use std::fs;

use anyhow::{bail, ensure, Result};

use super::{ok, pass, write_file, Ctx, Verdict};
use crate::sys::DirStream;

super::test_list!(
    readdir_lists_every_entry_once,
    readdir_returns_stable_entries_once_while_others_change,
    telldir_seekdir_resumes_at_the_same_entry,
    telldir_seekdir_resumes_after_entries_change,
    rewinddir_sees_entries_added_since_open,
);

fn populate(c: &Ctx, prefix: &str, n: usize) -> Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}{i:04}");
        write_file(&c.p(&name), b"")?;
        names.push(name.into_bytes());
    }
    Ok(names)
}

fn counts(names: &[Vec<u8>]) -> HashMap<&[u8], usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n.as_slice()).or_insert(0) += 1;
    }
    m
}

fn show(n: &[u8]) -> String {
    String::from_utf8_lossy(n).into_owned()
}

fn readdir_lists_every_entry_once(c: &Ctx) -> Result<Verdict> {
    let mut want = populate(c, "f", 500)?;
    ok(fs::create_dir(c.p("sub")), "mkdir")?;
    want.push(b"sub".to_vec());
    let mut d = ok(DirStream::open(&c.dir), "opendir")?;
    let mut dots = 0;
    let mut got = Vec::new();
    while let Some(n) = ok(d.read(), "readdir")? {
        if n == b"." || n == b".." {
            dots += 1;
        } else {
            got.push(n);
        }
    }
    ensure!(
        dots == 2,
        "readdir returned . and .. {dots} times in all, expected 2"
    );
    let m = counts(&got);
    for (n, k) in &m {
        ensure!(*k == 1, "{} listed {k} times", show(n));
    }
    for n in &want {
        ensure!(
            m.contains_key(n.as_slice()),
            "{} missing from the listing",
            show(n)
        );
    }
    ensure!(
        got.len() == want.len(),
        "{} entries listed, {} exist",
        got.len(),
        want.len()
    );
    pass()
}

fn readdir_returns_stable_entries_once_while_others_change(c: &Ctx) -> Result<Verdict> {
    let keep = populate(c, "keep", 300)?;
    let del = populate(c, "del", 150)?;
    let mut d = ok(DirStream::open(&c.dir), "opendir")?;
    let mut got = Vec::new();
    for _ in 0..100 {
        match ok(d.read(), "readdir")? {
            Some(n) => got.push(n),
            None => break,
        }
    }
    // Change the directory under the open stream.
    populate(c, "add", 200)?;
    for n in &del {
        ok(fs::remove_file(c.p(&show(n))), "unlink")?;
    }
    got.extend(ok(d.read_rest(), "readdir")?);
    got.retain(|n| n != b"." && n != b"..");
    let m = counts(&got);
    for (n, k) in &m {
        ensure!(
            *k == 1,
            "{} returned {k} times while the directory changed",
            show(n)
        );
    }
    for n in &keep {
        ensure!(
            m.contains_key(n.as_slice()),
            "{} (present throughout) was never returned",
            show(n)
        );
    }
    pass()
}

fn telldir_seekdir_resumes_at_the_same_entry(c: &Ctx) -> Result<Verdict> {
    populate(c, "f", 200)?;
    let mut d = ok(DirStream::open(&c.dir), "opendir")?;
    for _ in 0..60 {
        ok(d.read(), "readdir")?;
    }
    let pos = ok(d.tell(), "telldir")?;
    let Some(next) = ok(d.read(), "readdir")? else {
        bail!("stream ended after 60 of 202 entries");
    };
    let rest_first = ok(d.read_rest(), "readdir")?;
    d.seek(pos);
    let Some(again) = ok(d.read(), "readdir after seekdir")? else {
        bail!("stream empty after seekdir");
    };
    ensure!(
        again == next,
        "after seekdir got {}, expected {}",
        show(&again),
        show(&next)
    );
    let rest_second = ok(d.read_rest(), "readdir")?;
    ensure!(
        rest_first == rest_second,
        "the stream after seekdir differs from the first pass"
    );
    pass()
}

fn telldir_seekdir_resumes_after_entries_change(c: &Ctx) -> Result<Verdict> {
    let names = populate(c, "f", 200)?;
    let mut d = ok(DirStream::open(&c.dir), "opendir")?;
    let mut before = Vec::new();
    for _ in 0..60 {
        if let Some(n) = ok(d.read(), "readdir")? {
            before.push(n);
        }
    }
    let pos = ok(d.tell(), "telldir")?;
    let Some(next) = ok(d.read(), "readdir")? else {
        bail!("stream ended after 60 of 202 entries");
    };
    // Remove entries already read (not `next`) and add new ones, then go back.
    for n in before.iter().filter(|n| n.starts_with(b"f")).take(20) {
        ok(fs::remove_file(c.p(&show(n))), "unlink")?;
    }
    populate(c, "new", 50)?;
    d.seek(pos);
    let Some(again) = ok(d.read(), "readdir after seekdir")? else {
        bail!("stream empty after seekdir");
    };
    ensure!(
        again == next,
        "after changes and seekdir got {}, expected {}",
        show(&again),
        show(&next)
    );
    // Entries never touched that were not read before the mark are all still ahead.
    let mut rest = vec![again];
    rest.extend(ok(d.read_rest(), "readdir")?);
    let m = counts(&rest);
    for n in names.iter().filter(|n| !before.contains(n)) {
        ensure!(
            m.get(n.as_slice()) == Some(&1),
            "{} not returned exactly once after seekdir",
            show(n)
        );
    }
    pass()
}

fn rewinddir_sees_entries_added_since_open(c: &Ctx) -> Result<Verdict> {
    populate(c, "f", 10)?;
    let mut d = ok(DirStream::open(&c.dir), "opendir")?;
    let first = ok(d.read_rest(), "readdir")?;
    ensure!(first.len() == 10, "listed {} of 10 entries", first.len());
    write_file(&c.p("late"), b"")?;
    ok(fs::remove_file(c.p("f0000")), "unlink")?;
    d.rewind();
    let second = ok(d.read_rest(), "readdir after rewinddir")?;
    ensure!(
        second.iter().any(|n| n == b"late"),
        "rewinddir did not show an entry added since opendir"
    );
    ensure!(
        !second.iter().any(|n| n == b"f0000"),
        "rewinddir still shows a removed entry"
    );
    ensure!(
        second.len() == 10,
        "listed {} entries after rewinddir, expected 10",
        second.len()
    );
    pass()
}
