//! A data directory's identity: a random id in `<dir>/directory.id`, made (and fsynced, with
//! the directory entry) the first time the directory is used. Brokers report theirs to the
//! controller (a restarted broker vs. a second process with the same node id); controllers
//! are voters as (node id, directory id), so a wiped disk is not the voter it was (KIP-853).

use std::io::Write;
use std::path::Path;

/// The id in `<dir>/directory.id`, made when missing or empty. Returns whether it was just
/// made (the directory had none).
pub fn load_or_create(dir: &Path) -> Result<(String, bool), String> {
    let path = dir.join("directory.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok((id.trim().to_string(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    }
    let id = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let write = || -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(id.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok((id, true))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (a, new) = super::load_or_create(dir.path()).unwrap();
        assert!(new && a.len() == 32);
        assert_eq!(super::load_or_create(dir.path()).unwrap(), (a, false));
    }
}
