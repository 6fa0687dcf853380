//! The POSIX namespace over a real system (one engine, two targets): every
//! operation, through libdaos and the engines, with the errno a local
//! filesystem gives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use dfs::{rename_flags, Dfs, Errno, Kind, Obj, SetAttr, Special};
use libdaos::{Daos, DaosOpts, PoolFlags};
use testkit::System;

const REG: u32 = libc::S_IFREG;

async fn setup() -> (System, Dfs) {
    let (sys, agent) = testkit::posix_system();
    let daos = Daos::with_opts(DaosOpts {
        agent_dir: Some(agent),
        retry_for: Duration::from_secs(30),
        ..DaosOpts::default()
    })
    .await
    .unwrap();
    let pool = daos
        .pool_connect("tank", PoolFlags::ReadWrite)
        .await
        .unwrap();
    let cont = pool.open_container("fs", true).await.unwrap();
    let fs = Dfs::mount(cont).await.unwrap();
    (sys, fs)
}

/// [`setup`] with a regular file `f` in the root: the system, the mount,
/// the root and the file.
async fn with_file() -> (System, Dfs, Obj, Obj) {
    let (sys, fs) = setup().await;
    let root = fs.root().await.unwrap();
    let f = fs
        .create(&root, b"f", REG | 0o644, 0, 0, Special::None)
        .await
        .unwrap();
    (sys, fs, root, f)
}

fn e(n: i32) -> Errno {
    Errno(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posix_namespace() {
    let (_sys, fs) = setup().await;
    let root = fs.root().await.unwrap();
    assert_eq!(root.kind(), Kind::Dir);
    assert_eq!(fs.chunk_size(), 64 << 10);

    // create, O_EXCL, lookup, stat
    let f = fs
        .create(&root, b"a.txt", REG | 0o644, 1000, 100, Special::None)
        .await
        .unwrap();
    assert_eq!(
        fs.create(&root, b"a.txt", REG | 0o644, 0, 0, Special::None)
            .await
            .unwrap_err(),
        e(libc::EEXIST)
    );
    let l = fs.lookup(&root, b"a.txt").await.unwrap();
    assert_eq!(l.oid, f.oid);
    let a = fs.getattr(&l).await.unwrap();
    assert_eq!(
        (a.kind, a.mode, a.uid, a.gid, a.size, a.nlink),
        (Kind::File, REG | 0o644, 1000, 100, 0, 1)
    );
    assert_eq!(
        fs.lookup(&root, b"missing").await.unwrap_err(),
        e(libc::ENOENT)
    );
    let long = vec![b'x'; 256];
    assert_eq!(
        fs.lookup(&root, &long).await.unwrap_err(),
        e(libc::ENAMETOOLONG)
    );
    assert_eq!(
        fs.create(&root, &long, REG, 0, 0, Special::None)
            .await
            .unwrap_err(),
        e(libc::ENAMETOOLONG)
    );
    // Any bytes but '/' and NUL make a name.
    let odd = b"\xff\x01 odd \xe2\x98\x83 name".to_vec();
    fs.create(&root, &odd, REG | 0o600, 0, 0, Special::None)
        .await
        .unwrap();
    assert_eq!(fs.lookup(&root, &odd).await.unwrap().name, odd);

    // write and read at any offset; sparse reads are zeros; beyond 4 GiB
    fs.write(&f, 0, Bytes::from_static(b"hello")).await.unwrap();
    fs.write(&f, 200_000, Bytes::from_static(b"far"))
        .await
        .unwrap();
    assert_eq!(fs.size(&f).await.unwrap(), 200_003);
    let r = fs.read(&f, 0, 10).await.unwrap();
    assert_eq!(&r[..5], b"hello");
    assert!(r[5..].iter().all(|b| *b == 0));
    assert_eq!(
        &fs.read(&f, 200_000, 100).await.unwrap()[..],
        b"far",
        "short read at the end"
    );
    assert!(fs.read(&f, 300_000, 10).await.unwrap().is_empty());
    let big = 5u64 << 30;
    fs.write(&f, big, Bytes::from_static(b"5GiB"))
        .await
        .unwrap();
    assert_eq!(fs.getattr(&f).await.unwrap().size, big + 4);
    assert_eq!(&fs.read(&f, big, 4).await.unwrap()[..], b"5GiB");

    // truncate down and up
    let a = fs
        .setattr(
            &f,
            &SetAttr {
                size: Some(3),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(a.size, 3);
    assert_eq!(&fs.read(&f, 0, 10).await.unwrap()[..], b"hel");
    fs.setattr(
        &f,
        &SetAttr {
            size: Some(100_000),
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let r = fs.read(&f, 0, 100_000).await.unwrap();
    assert_eq!(r.len(), 100_000);
    assert!(
        r[3..].iter().all(|b| *b == 0),
        "truncated bytes come back as zeros"
    );

    // mode, owner, times
    let a = fs
        .setattr(
            &f,
            &SetAttr {
                mode: Some(0o600),
                uid: Some(7),
                gid: Some(8),
                mtime: Some(1_000_000_123),
                atime: Some(5),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (a.mode, a.uid, a.gid, a.mtime, a.atime),
        (REG | 0o600, 7, 8, 1_000_000_123, 5)
    );
    assert!(a.ctime > 1_000_000_123);

    // fallocate: extend, punch a hole keeping the size
    fs.write(&f, 0, Bytes::from(vec![1u8; 200_000]))
        .await
        .unwrap();
    fs.fallocate(
        &f,
        dfs::falloc::PUNCH_HOLE | dfs::falloc::KEEP_SIZE,
        50_000,
        100_000,
    )
    .await
    .unwrap();
    let r = fs.read(&f, 0, 200_000).await.unwrap();
    assert!(
        r[..50_000].iter().all(|b| *b == 1)
            && r[50_000..150_000].iter().all(|b| *b == 0)
            && r[150_000..].iter().all(|b| *b == 1)
    );
    fs.fallocate(
        &f,
        dfs::falloc::PUNCH_HOLE | dfs::falloc::KEEP_SIZE,
        150_000,
        50_000,
    )
    .await
    .unwrap();
    assert_eq!(
        fs.size(&f).await.unwrap(),
        200_000,
        "punching the tail keeps the size"
    );
    fs.fallocate(&f, 0, 0, 300_000).await.unwrap();
    assert_eq!(fs.size(&f).await.unwrap(), 300_000);

    // directories
    let d = fs
        .create(&root, b"dir", libc::S_IFDIR | 0o755, 0, 0, Special::None)
        .await
        .unwrap();
    let sub = fs
        .create(&d, b"sub", libc::S_IFDIR | 0o700, 0, 0, Special::None)
        .await
        .unwrap();
    fs.create(&sub, b"leaf", REG | 0o644, 0, 0, Special::None)
        .await
        .unwrap();
    assert_eq!(
        fs.rmdir(&d, b"sub", None).await.unwrap_err(),
        e(libc::ENOTEMPTY)
    );
    assert_eq!(
        fs.rmdir(&d, b"sub", Some(&sub)).await.unwrap_err(),
        e(libc::ENOTEMPTY)
    );
    assert_eq!(
        fs.rmdir(&root, b"a.txt", None).await.unwrap_err(),
        e(libc::ENOTDIR)
    );
    assert_eq!(
        fs.unlink(&root, b"dir", None).await.unwrap_err(),
        e(libc::EISDIR)
    );
    assert_eq!(fs.lookup(&f, b"x").await.unwrap_err(), e(libc::ENOTDIR));

    // readdir: pages, resumable while entries come and go
    for i in 0..50 {
        fs.create(
            &d,
            format!("f{i:02}").as_bytes(),
            REG | 0o644,
            0,
            0,
            Special::None,
        )
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut anchor = None;
    let mut pages = 0;
    loop {
        let (ents, next) = fs.readdir(&d, anchor, 7).await.unwrap();
        pages += 1;
        if pages == 2 {
            fs.unlink(&d, b"f49", None).await.unwrap();
            fs.create(&d, b"zz-new", REG, 0, 0, Special::None)
                .await
                .unwrap();
        }
        seen.extend(ents.into_iter().map(|o| String::from_utf8(o.name).unwrap()));
        match next {
            Some(a) => anchor = Some(a),
            None => break,
        }
    }
    assert!(pages > 5);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "no entry twice: {seen:?}");
    for i in 0..49 {
        assert!(seen.contains(&format!("f{i:02}")), "f{i:02} missing");
    }
    assert!(seen.contains(&"sub".to_string()));

    // rename: over a file, across directories, NOREPLACE, EXCHANGE, dirs
    let b = fs
        .create(&root, b"b.txt", REG | 0o644, 0, 0, Special::None)
        .await
        .unwrap();
    fs.write(&b, 0, Bytes::from_static(b"bbb")).await.unwrap();
    let victim = fs.rename(&root, b"b.txt", &d, b"f00", 0).await.unwrap();
    assert!(
        victim.is_some(),
        "the replaced file's object is handed back to free"
    );
    assert_eq!(
        fs.lookup(&root, b"b.txt").await.unwrap_err(),
        e(libc::ENOENT)
    );
    let moved = fs.lookup(&d, b"f00").await.unwrap();
    assert_eq!(&fs.read(&moved, 0, 3).await.unwrap()[..], b"bbb");
    assert_eq!(
        fs.rename(&d, b"f00", &d, b"f01", rename_flags::NOREPLACE)
            .await
            .unwrap_err(),
        e(libc::EEXIST)
    );
    fs.rename(&d, b"f00", &d, b"f01", rename_flags::EXCHANGE)
        .await
        .unwrap();
    assert_eq!(fs.lookup(&d, b"f01").await.unwrap().oid, moved.oid);
    assert_eq!(
        fs.rename(&root, b"dir", &root, b"a.txt", 0)
            .await
            .unwrap_err(),
        e(libc::ENOTDIR)
    );
    assert_eq!(
        fs.rename(&root, b"a.txt", &d, b"sub", 0).await.unwrap_err(),
        e(libc::EISDIR)
    );
    // A directory may replace an empty one; never a non-empty one.
    let empty = fs
        .create(&root, b"empty", libc::S_IFDIR | 0o755, 0, 0, Special::None)
        .await
        .unwrap();
    assert_eq!(
        fs.rename(&d, b"sub", &root, b"empty", 0).await.unwrap(),
        Some((empty.oid, true))
    );
    let moved_sub = fs.lookup(&root, b"empty").await.unwrap();
    assert_eq!(fs.lookup(&moved_sub, b"leaf").await.unwrap().name, b"leaf");
    fs.create(&d, b"e2", libc::S_IFDIR | 0o755, 0, 0, Special::None)
        .await
        .unwrap();
    assert_eq!(
        fs.rename(&d, b"e2", &root, b"empty", 0).await.unwrap_err(),
        e(libc::ENOTEMPTY)
    );

    // A directory's link count is 2 plus its subdirectories; its mtime and
    // ctime move with every change to its entries, and concurrent creates
    // from many tasks lose none of it.
    const DIR: u32 = libc::S_IFDIR | 0o755;
    let t = fs
        .create(&root, b"times", DIR, 0, 0, Special::None)
        .await
        .unwrap();
    let stat = |o: dfs::Obj| {
        let fs = fs.clone();
        async move { fs.getattr(&o).await.unwrap() }
    };
    let t0 = stat(t.clone()).await;
    assert_eq!(t0.nlink, 2);
    let root0 = stat(root.clone()).await;
    let tick = || tokio::time::sleep(Duration::from_millis(2));
    tick().await;
    let c1 = fs
        .create(&t, b"c1", DIR, 0, 0, Special::None)
        .await
        .unwrap();
    let t1 = stat(t.clone()).await;
    assert_eq!(t1.nlink, 3);
    assert!(
        t1.mtime > t0.mtime && t1.ctime > t0.ctime,
        "mkdir: {t0:?} {t1:?}"
    );
    tick().await;
    fs.create(&t, b"file", REG, 0, 0, Special::None)
        .await
        .unwrap();
    let t2 = stat(t.clone()).await;
    assert_eq!(t2.nlink, 3, "a file is no subdirectory");
    assert!(t2.mtime > t1.mtime, "create");
    // utimes on a directory sets exactly what it is given; ctime moves on.
    tick().await;
    let set = fs
        .setattr(
            &t,
            &SetAttr {
                mtime: Some(1_000_000_007),
                ..SetAttr::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(set.mtime, 1_000_000_007);
    assert!(set.ctime > t2.ctime);
    assert_eq!(stat(t.clone()).await.mtime, 1_000_000_007);
    // rename of a directory across parents moves the link; both parents
    // and the moved directory change.
    tick().await;
    let c1_0 = stat(c1.clone()).await;
    fs.rename(&t, b"c1", &root, b"c1-moved", 0).await.unwrap();
    let (t3, root1) = (stat(t.clone()).await, stat(root.clone()).await);
    assert_eq!((t3.nlink, root1.nlink), (2, root0.nlink + 1));
    assert!(t3.mtime > set.ctime && root1.mtime > root0.mtime);
    let c1_1 = stat(fs.lookup(&root, b"c1-moved").await.unwrap()).await;
    assert!(c1_1.ctime > c1_0.ctime, "a renamed directory's ctime");
    // EXCHANGE of a directory and a file across parents swaps the links.
    fs.rename(&root, b"c1-moved", &t, b"file", rename_flags::EXCHANGE)
        .await
        .unwrap();
    assert_eq!(stat(t.clone()).await.nlink, 3);
    assert_eq!(stat(root.clone()).await.nlink, root0.nlink);
    assert_eq!(
        fs.lookup(&root, b"c1-moved").await.unwrap().kind(),
        Kind::File
    );
    // Renaming within one directory keeps the count.
    fs.rename(&t, b"file", &t, b"c1", 0).await.unwrap();
    assert_eq!(stat(t.clone()).await.nlink, 3);
    // link and unlink change the directory's times.
    let t4 = stat(t.clone()).await;
    tick().await;
    let moved_file = fs.lookup(&root, b"c1-moved").await.unwrap();
    fs.link(&moved_file, &t, b"hard").await.unwrap();
    let t5 = stat(t.clone()).await;
    assert!(t5.mtime > t4.mtime && t5.ctime > t4.ctime, "link");
    tick().await;
    fs.unlink(&t, b"hard", None).await.unwrap();
    let t6 = stat(t.clone()).await;
    assert!(t6.mtime > t5.mtime, "unlink");
    tick().await;
    fs.rmdir(&t, b"c1", None).await.unwrap();
    let t7 = stat(t.clone()).await;
    assert_eq!(t7.nlink, 2);
    assert!(t7.mtime > t6.mtime, "rmdir");
    let many = futures::future::join_all((0..24).map(|i| {
        let (fs, t) = (fs.clone(), t.clone());
        async move {
            fs.create(&t, format!("m{i}").as_bytes(), DIR, 0, 0, Special::None)
                .await
                .unwrap();
        }
    }));
    many.await;
    assert_eq!(stat(t.clone()).await.nlink, 26);

    // symlinks, FIFOs, sockets
    let s = fs
        .create(
            &root,
            b"link",
            libc::S_IFLNK | 0o777,
            0,
            0,
            Special::Symlink(b"dir/f01"),
        )
        .await
        .unwrap();
    assert_eq!(fs.readlink(&s).await.unwrap(), b"dir/f01");
    assert_eq!(fs.getattr(&s).await.unwrap().size, 7);
    let fifo = fs
        .create(&root, b"fifo", libc::S_IFIFO | 0o600, 0, 0, Special::None)
        .await
        .unwrap();
    assert_eq!(fs.getattr(&fifo).await.unwrap().kind, Kind::Fifo);
    let sock = fs
        .create(&root, b"sock", libc::S_IFSOCK | 0o600, 0, 0, Special::None)
        .await
        .unwrap();
    assert_eq!(fs.getattr(&sock).await.unwrap().kind, Kind::Socket);

    // hard links: shared data and attributes, link count, last unlink frees
    let h = fs
        .create(&root, b"h1", REG | 0o644, 0, 0, Special::None)
        .await
        .unwrap();
    fs.write(&h, 0, Bytes::from_static(b"shared"))
        .await
        .unwrap();
    let stale = fs.lookup(&root, b"h1").await.unwrap();
    let h2 = fs.link(&h, &d, b"h2").await.unwrap();
    // A copy read before the link (a listing's) still changes the one
    // shared record, never the stub in its entry.
    fs.setattr(
        &stale,
        &SetAttr {
            uid: Some(7),
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(fs.getattr(&h2).await.unwrap().uid, 7);
    assert_eq!(fs.getattr(&stale).await.unwrap().nlink, 2);
    let h1 = fs.lookup(&root, b"h1").await.unwrap();
    assert_eq!(fs.getattr(&h1).await.unwrap().nlink, 2);
    assert_eq!(fs.getattr(&h2).await.unwrap().nlink, 2);
    fs.setattr(
        &h2,
        &SetAttr {
            mode: Some(0o640),
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        fs.getattr(&h1).await.unwrap().mode,
        REG | 0o640,
        "one inode behind both names"
    );
    let h3 = fs.link(&h1, &root, b"h3").await.unwrap();
    assert_eq!(fs.getattr(&h3).await.unwrap().nlink, 3);
    assert_eq!(
        fs.link(&d, &root, b"dirlink").await.unwrap_err(),
        e(libc::EPERM)
    );
    assert_eq!(
        fs.unlink(&root, b"h1", None)
            .await
            .map(|r| (r.oid, r.last))
            .unwrap(),
        (h.oid, false)
    );
    // A rename over one name of a linked file leaves the others.
    let h3_0 = fs.getattr(&h3).await.unwrap();
    fs.create(&d, b"over", REG, 0, 0, Special::None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(
        fs.rename(&d, b"over", &d, b"h2", 0).await.unwrap(),
        Some((h.oid, false))
    );
    let h3_1 = fs.getattr(&h3).await.unwrap();
    assert_eq!(h3_1.nlink, 1);
    assert!(h3_1.ctime > h3_0.ctime);
    let over = fs.lookup(&d, b"h2").await.unwrap();
    assert_eq!(
        fs.unlink(&d, b"h2", None)
            .await
            .map(|r| (r.oid, r.last))
            .unwrap(),
        (over.oid, true)
    );
    let h3 = fs.lookup(&root, b"h3").await.unwrap();
    assert_eq!(fs.getattr(&h3).await.unwrap().nlink, 1);
    assert_eq!(&fs.read(&h3, 0, 6).await.unwrap()[..], b"shared");
    let freed = fs
        .unlink(&root, b"h3", None)
        .await
        .map(|r| (r.oid, r.last))
        .unwrap();
    assert_eq!(freed, (h.oid, true), "the last name gone: free the object");
    fs.free(h.oid).await.unwrap();

    // An unlink told what the name held removes it on the engine's check;
    // a stale guess removes what the name holds now, never the guessed object.
    let gone = |r: dfs::Removed| (r.oid, r.last);
    let g1 = fs
        .create(&root, b"g", REG | 0o644, 0, 0, Special::None)
        .await
        .unwrap();
    let before = fs.getattr(&root).await.unwrap().mtime;
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(
        fs.unlink(&root, b"g", Some(&g1)).await.map(gone).unwrap(),
        (g1.oid, true)
    );
    assert_eq!(fs.lookup(&root, b"g").await.unwrap_err(), e(libc::ENOENT));
    assert!(fs.getattr(&root).await.unwrap().mtime > before);
    let g2 = fs
        .create(&root, b"g", REG | 0o644, 0, 0, Special::None)
        .await
        .unwrap();
    assert_eq!(
        fs.unlink(&root, b"g", Some(&g1)).await.map(gone).unwrap(),
        (g2.oid, true),
        "the name was given to another file since"
    );
    assert_eq!(
        fs.unlink(&root, b"g", Some(&g2)).await.unwrap_err(),
        e(libc::ENOENT)
    );
    let g3 = fs
        .create(&root, b"g", REG | 0o644, 0, 0, Special::None)
        .await
        .unwrap();
    let g3l = fs.link(&g3, &root, b"g-link").await.unwrap();
    assert_eq!(
        fs.unlink(&root, b"g", Some(&g3)).await.map(gone).unwrap(),
        (g3.oid, false),
        "linked since the guess: not its last name"
    );
    assert_eq!(fs.getattr(&g3l).await.unwrap().nlink, 1);
    assert_eq!(
        fs.unlink(&root, b"g-link", Some(&g1))
            .await
            .map(gone)
            .unwrap(),
        (g3.oid, true),
        "a guess for another name is not used"
    );
    for o in [g1.oid, g2.oid, g3.oid] {
        fs.free(o).await.unwrap();
    }
    // The same for directories: a stale guess, empty or not, removes the
    // directory the name holds now.
    let new_r = || fs.create(&root, b"r", libc::S_IFDIR | 0o755, 0, 0, Special::None);
    let r1 = new_r().await.unwrap();
    assert_eq!(
        fs.rmdir(&root, b"r", Some(&r1)).await.map(gone).unwrap(),
        (r1.oid, true)
    );
    let r2 = new_r().await.unwrap();
    assert_eq!(
        fs.rmdir(&root, b"r", Some(&r1)).await.map(gone).unwrap(),
        (r2.oid, true)
    );
    let r3 = new_r().await.unwrap();
    fs.create(&r3, b"in", REG, 0, 0, Special::None)
        .await
        .unwrap();
    fs.rename(&root, b"r", &root, b"r-full", 0).await.unwrap();
    let r4 = new_r().await.unwrap();
    assert_eq!(
        fs.rmdir(&root, b"r", Some(&r3)).await.map(gone).unwrap(),
        (r4.oid, true),
        "the guessed directory is not empty, the one named is"
    );
    assert_eq!(
        fs.rmdir(&root, b"r", Some(&r4)).await.unwrap_err(),
        e(libc::ENOENT)
    );

    // extended attributes
    fs.setxattr(&f, b"user.color", b"blue", 0).await.unwrap();
    fs.setxattr(&f, b"security.label", b"x", 0).await.unwrap();
    assert_eq!(fs.getxattr(&f, b"user.color").await.unwrap(), b"blue");
    assert_eq!(
        fs.setxattr(&f, b"user.color", b"red", 1).await.unwrap_err(),
        e(libc::EEXIST)
    );
    assert_eq!(
        fs.setxattr(&f, b"user.none", b"red", 2).await.unwrap_err(),
        e(libc::ENODATA)
    );
    let mut names = fs.listxattr(&f).await.unwrap();
    names.sort();
    assert_eq!(
        names,
        vec![b"security.label".to_vec(), b"user.color".to_vec()]
    );
    fs.removexattr(&f, b"user.color").await.unwrap();
    assert_eq!(
        fs.getxattr(&f, b"user.color").await.unwrap_err(),
        e(libc::ENODATA)
    );
    assert_eq!(
        fs.removexattr(&f, b"user.color").await.unwrap_err(),
        e(libc::ENODATA)
    );
    assert_eq!(
        fs.setxattr(&f, b"bogus.ns", b"v", 0).await.unwrap_err(),
        e(libc::EOPNOTSUPP)
    );

    // statfs from the pool
    let st = fs.statfs().await.unwrap();
    assert!(st.total > 400 << 20 && st.free > 0 && st.free <= st.total);

    // A second mount sees the same namespace.
    let again = Dfs::mount(fs.container().clone()).await.unwrap();
    let r2 = again.root().await.unwrap();
    assert_eq!(again.lookup(&r2, b"a.txt").await.unwrap().oid, f.oid);
}

/// A blind change of a non-directory's fields (times, permissions, owner).
fn fields(
    atime: Option<i64>,
    mtime: Option<i64>,
    ctime: i64,
    mode: Option<u32>,
    owner: Option<(u32, u32)>,
) -> SetAttr {
    SetAttr {
        atime,
        mtime,
        ctime: Some(ctime),
        mode,
        uid: owner.map(|o| o.0),
        gid: owner.map(|o| o.1),
        ..SetAttr::default()
    }
}

/// Fields set without the record (the write-back cache's mtime at close,
/// utimensat, chmod, chown) are what every reader sees, survive later
/// whole-record changes, and never leak onto another file through a reused
/// name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_written_beside_the_record() {
    let (_sys, fs, root, f) = with_file().await;
    let (at, mt, ct) = (1_000_000_001, 2_000_000_002, 3_000_000_003);
    let s = fields(Some(at), Some(mt), ct, Some(0o4711), Some((7, 8)));
    assert_eq!(fs.set_fields(&f, &s).await.unwrap(), ct);
    let a = fs.getattr(&f).await.unwrap();
    assert_eq!((a.atime, a.mtime, a.ctime), (at, mt, ct));
    assert_eq!((a.mode, a.uid, a.gid), (REG | 0o4711, 7, 8));
    let l = fs.lookup(&root, b"f").await.unwrap();
    assert_eq!((l.inode.atime, l.inode.mtime, l.inode.ctime), (at, mt, ct));
    assert_eq!(
        (l.inode.mode, l.inode.uid, l.inode.gid),
        (REG | 0o4711, 7, 8)
    );
    let (page, _) = fs.readdir(&root, None, 16).await.unwrap();
    let listed = page.iter().find(|o| o.name == b"f").unwrap();
    assert_eq!(
        (
            listed.inode.atime,
            listed.inode.mtime,
            listed.inode.mode,
            listed.inode.uid
        ),
        (at, mt, REG | 0o4711, 7),
        "readdir(plus) shows the fields written beside the record"
    );
    // One field alone leaves the others, and the file type, as they were.
    let now = dfs::now_ns();
    let chmod = fields(None, None, now, Some(libc::S_IFDIR | 0o640), None);
    assert_eq!(fs.set_fields(&f, &chmod).await.unwrap(), now);
    let a = fs.getattr(&f).await.unwrap();
    assert_eq!((a.mode, a.uid, a.gid, a.mtime), (REG | 0o640, 7, 8, mt));

    // A whole-record change keeps them (and moves ctime on).
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    let a = fs.setattr(&l, &chmod, None).await.unwrap();
    assert_eq!(
        (a.mode, a.uid, a.gid, a.atime, a.mtime),
        (REG | 0o600, 7, 8, at, mt)
    );
    assert!(a.ctime > now);
    // ...and a later blind write of one field leaves the others alone.
    let mt2 = 4_000_000_004;
    let s = fields(None, Some(mt2), dfs::now_ns(), None, Some((9, 10)));
    fs.set_fields(&l, &s).await.unwrap();
    let a = fs.getattr(&l).await.unwrap();
    assert_eq!((a.mode, a.atime, a.mtime), (REG | 0o600, at, mt2));
    assert_eq!((a.uid, a.gid), (9, 10));

    // Renamed over a name whose old file had its own fields: the moved file
    // keeps its fields, not the victim's.
    let v = fs
        .create(&root, b"victim", REG | 0o644, 0, 0, Special::None)
        .await
        .unwrap();
    let s = fields(Some(7), Some(8), 9, Some(0o777), Some((1, 1)));
    fs.set_fields(&v, &s).await.unwrap();
    fs.rename(&root, b"f", &root, b"victim", 0).await.unwrap();
    let moved = fs.lookup(&root, b"victim").await.unwrap();
    assert_eq!(moved.oid, f.oid);
    assert_eq!((moved.inode.atime, moved.inode.mtime), (at, mt2));
    assert_eq!((moved.inode.mode, moved.inode.uid), (REG | 0o600, 9));
    // A name reused after an unlink starts from its new record.
    fs.unlink(&root, b"victim", None).await.unwrap();
    let reborn = fs
        .create(&root, b"victim", REG | 0o644, 0, 0, Special::None)
        .await
        .unwrap();
    let a = fs.getattr(&reborn).await.unwrap();
    assert_eq!((a.mode, a.uid, a.gid), (REG | 0o644, 0, 0));

    // A hard-linked file's fields live with its shared record: set through
    // one name, seen through the other.
    let second = fs.link(&reborn, &root, b"second").await.unwrap();
    let s = fields(None, Some(5_000_000_005), dfs::now_ns(), Some(0o700), None);
    fs.set_fields(&second, &s).await.unwrap();
    let first = fs.lookup(&root, b"victim").await.unwrap();
    let a = fs.getattr(&first).await.unwrap();
    assert_eq!((a.mtime, a.mode), (5_000_000_005, REG | 0o700));

    // Directories keep their own times, a size needs the object, a name
    // that is gone is ENOENT.
    let d = fs
        .create(&root, b"d", libc::S_IFDIR | 0o755, 0, 0, Special::None)
        .await
        .unwrap();
    let s = fields(None, Some(1), 1, None, None);
    assert_eq!(fs.set_fields(&d, &s).await.unwrap_err(), e(libc::EISDIR));
    let truncate = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    assert_eq!(
        fs.set_fields(&first, &truncate).await.unwrap_err(),
        e(libc::EINVAL)
    );
    let g = fs
        .create(&root, b"gone", REG | 0o644, 0, 0, Special::None)
        .await
        .unwrap();
    fs.unlink(&root, b"gone", None).await.unwrap();
    assert_eq!(fs.set_fields(&g, &s).await.unwrap_err(), e(libc::ENOENT));
}

/// A file's mtime and ctime are its newest write's epoch where that write
/// came after the mtime was last set (what lets dfuse leave the kernel's
/// write-back of the times to the engines); an mtime set after the write,
/// even to the past, stands, through renames, whole-record changes and
/// links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtime_is_the_newest_write_unless_set_since() {
    let (_sys, fs, root, f) = with_file().await;
    let made = fs.getattr(&f).await.unwrap();
    let before = dfs::now_ns();
    fs.write(&f, 0, Bytes::from_static(b"data")).await.unwrap();
    let after = dfs::now_ns();
    let a = fs.getattr(&f).await.unwrap();
    assert!(a.mtime > made.mtime, "{a:?} {made:?}");
    assert!(
        a.mtime >= before && a.mtime < after + 1_000_000_000,
        "{a:?}"
    );
    assert_eq!(a.ctime, a.mtime);
    let l = fs.lookup(&root, b"f").await.unwrap();
    assert_eq!(fs.entry_attrs(&[&l]).await[0].as_ref().unwrap(), &a);

    // Set to the past after the write: it stands, for every reader.
    let past = 1_000_000_000;
    let s = fields(None, Some(past), dfs::now_ns(), None, None);
    fs.set_fields(&f, &s).await.unwrap();
    assert_eq!(fs.getattr(&f).await.unwrap().mtime, past);
    let l = fs.lookup(&root, b"f").await.unwrap();
    assert_eq!(fs.entry_attrs(&[&l]).await[0].as_ref().unwrap().mtime, past);
    // ...through a rename and a whole-record change.
    fs.rename(&root, b"f", &root, b"g", 0).await.unwrap();
    let g = fs.lookup(&root, b"g").await.unwrap();
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    assert_eq!(fs.setattr(&g, &chmod, None).await.unwrap().mtime, past);
    assert_eq!(fs.getattr(&g).await.unwrap().mtime, past);
    // A write after it is newer; so is a punch of the bytes.
    fs.write(&g, 4, Bytes::from_static(b"more")).await.unwrap();
    let w = fs.getattr(&g).await.unwrap();
    assert!(w.mtime > after, "{w:?}");
    let chmod = SetAttr {
        mode: Some(0o644),
        ..SetAttr::default()
    };
    assert_eq!(fs.setattr(&g, &chmod, None).await.unwrap().mtime, w.mtime);
    fs.fallocate(&g, dfs::falloc::PUNCH_HOLE | dfs::falloc::KEEP_SIZE, 0, 2)
        .await
        .unwrap();
    let p = fs.getattr(&g).await.unwrap();
    assert!(p.mtime > w.mtime && p.size == 8, "{p:?}");

    // A hard-linked file: set through one name, written through the other.
    let h = fs.link(&g, &root, b"h").await.unwrap();
    let g = fs.lookup(&root, b"g").await.unwrap();
    // (An mtime counts as set at the change's time, which `s` gave.)
    fs.set_fields(&h, &s).await.unwrap();
    assert!(fs.getattr(&g).await.unwrap().mtime > past);
    let s = fields(None, Some(past), dfs::now_ns(), None, None);
    fs.set_fields(&h, &s).await.unwrap();
    assert_eq!(fs.getattr(&g).await.unwrap().mtime, past);
    fs.write(&h, 0, Bytes::from_static(b"x")).await.unwrap();
    assert!(fs.getattr(&g).await.unwrap().mtime > p.mtime);
}
