//! Stored secrets (`cairn secret set`): only ciphertext and its nonce live here; encrypting,
//! decrypting and the key are `crate::secrets`' business. See `ARCHITECTURE.md` ("Secrets").

use super::error::Result;
use super::sql::Row;
use super::sqlite::{Store, now_ms};

/// One secret as stored: sealed, never the value.
#[derive(Debug, Clone)]
pub struct SealedSecret {
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub updated_at: i64,
}

fn row(row: &Row) -> Result<SealedSecret> {
    Ok(SealedSecret {
        name: row.get(0)?,
        nonce: row.get(1)?,
        ciphertext: row.get(2)?,
        updated_at: row.get(3)?,
    })
}

impl Store {
    /// Creates or replaces the secret `name`.
    pub fn put_secret(&self, name: &str, nonce: &[u8], ciphertext: &[u8]) -> Result<()> {
        self.write(|txn| {
            txn.conn.execute(
                "INSERT INTO secrets (name, nonce, ciphertext, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce,
                     ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
                &[&name, &nonce, &ciphertext, &now_ms()],
            )?;
            Ok(())
        })
    }

    pub fn secret(&self, name: &str) -> Result<Option<SealedSecret>> {
        self.read(|conn| {
            conn.query_opt(
                "SELECT name, nonce, ciphertext, updated_at FROM secrets WHERE name = ?1",
                &[&name],
            )?
            .map(|found| row(&found))
            .transpose()
        })
    }

    /// Every stored secret, by name.
    pub fn secrets(&self) -> Result<Vec<SealedSecret>> {
        self.read(|conn| {
            conn.query(
                "SELECT name, nonce, ciphertext, updated_at FROM secrets ORDER BY name",
                &[],
            )?
            .iter()
            .map(row)
            .collect()
        })
    }

    /// Deletes the secret; whether there was one.
    pub fn delete_secret(&self, name: &str) -> Result<bool> {
        self.write(|txn| {
            Ok(txn
                .conn
                .execute("DELETE FROM secrets WHERE name = ?1", &[&name])?
                > 0)
        })
    }
}
