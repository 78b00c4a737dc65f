"""Unit tests of the crypto layer: the AEAD envelope, key files, the master key and KDF params.

Everything here runs the real primitives (AES-256-GCM from `cryptography`, Argon2id, BLAKE3):
nothing is mocked. Key derivation uses the cheapest allowed parameters so the module stays fast.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime

import pytest

from stackvault.crypto.envelope import NONCE_SIZE, OVERHEAD, TAG_SIZE, Envelope
from stackvault.crypto.kdf import KdfParams, derive_key
from stackvault.crypto.keyfile import (
    KEY_AAD,
    read_key_info,
    unwrap_master_key,
    wrap_master_key,
)
from stackvault.crypto.masterkey import CHUNKER_SEED_BITS, MasterKey
from stackvault.errors import (
    EXIT_INTEGRITY,
    EXIT_WRONG_PASSWORD,
    IntegrityError,
    UnsupportedFormat,
    UsageError,
    WrongPassword,
)

FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
CREATED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
AAD = b"sv1:test-object"


def key32(seed: int) -> bytes:
    return bytes((seed + i) % 256 for i in range(32))


# --- envelope --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, 1024 * 1024 + 3])
def test_envelope_round_trip(size: int) -> None:
    env = Envelope(key32(1))
    plain = os.urandom(size)
    sealed = env.seal(plain, AAD)
    assert len(sealed) == size + OVERHEAD == size + NONCE_SIZE + TAG_SIZE
    assert env.open(sealed, AAD) == plain
    # Accepts the buffer types the pipelines hand it.
    assert env.open(memoryview(sealed), AAD) == plain
    assert env.open(bytearray(sealed), AAD) == plain
    assert env.open(env.seal(memoryview(plain), AAD), AAD) == plain


def test_envelope_does_not_contain_plaintext() -> None:
    env = Envelope(key32(1))
    plain = b"very secret database password " * 10
    sealed = env.seal(plain, AAD)
    assert b"secret" not in sealed


def test_envelope_nonces_differ() -> None:
    env = Envelope(key32(1))
    sealed = [env.seal(b"same plaintext", AAD) for _ in range(200)]
    nonces = {s[:NONCE_SIZE] for s in sealed}
    assert len(nonces) == 200
    # Equal plaintexts give different ciphertexts (no deterministic encryption).
    assert len({s[NONCE_SIZE:] for s in sealed}) == 200


def test_envelope_wrong_aad_is_integrity_error() -> None:
    env = Envelope(key32(1))
    sealed = env.seal(b"payload", b"sv1:index")
    for aad in (b"sv1:snapshot", b"", b"sv1:index\x00", b"sv1:inde"):
        with pytest.raises(IntegrityError) as info:
            env.open(sealed, aad)
        assert info.value.exit_code == EXIT_INTEGRITY
    assert env.open(sealed, b"sv1:index") == b"payload"


def test_envelope_every_flipped_bit_is_detected() -> None:
    env = Envelope(key32(7))
    plain = os.urandom(50)
    sealed = env.seal(plain, AAD)
    for pos in range(len(sealed)):
        for bit in range(8):
            damaged = bytearray(sealed)
            damaged[pos] ^= 1 << bit
            with pytest.raises(IntegrityError):
                env.open(bytes(damaged), AAD)
    assert env.open(sealed, AAD) == plain  # the original is untouched and still opens


def test_envelope_every_truncation_and_extension_is_detected() -> None:
    env = Envelope(key32(7))
    sealed = env.seal(b"0123456789" * 5, AAD)
    for n in range(len(sealed)):
        with pytest.raises(IntegrityError):
            env.open(sealed[:n], AAD)
        with pytest.raises(IntegrityError):
            env.open(sealed[len(sealed) - n :] if n else b"", AAD)
    with pytest.raises(IntegrityError):
        env.open(sealed + b"\x00", AAD)
    with pytest.raises(IntegrityError, match="truncated"):
        env.open(sealed[: OVERHEAD - 1], AAD)


def test_envelope_wrong_key_is_integrity_error() -> None:
    sealed = Envelope(key32(1)).seal(b"payload", AAD)
    with pytest.raises(IntegrityError):
        Envelope(key32(2)).open(sealed, AAD)
    # One differing key bit is enough.
    other = bytearray(key32(1))
    other[31] ^= 0x01
    with pytest.raises(IntegrityError):
        Envelope(bytes(other)).open(sealed, AAD)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_envelope_rejects_keys_that_are_not_32_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Envelope(b"k" * size)


# --- key derivation ---------------------------------------------------------------------------


def test_kdf_params_defaults_and_json_round_trip() -> None:
    p = KdfParams()
    assert p.memory_kib >= 8 * p.lanes and p.iterations >= 1 and p.lanes >= 1
    q = KdfParams(memory_kib=12345, iterations=4, lanes=3)
    assert q.to_json() == {"memory_kib": 12345, "iterations": 4, "lanes": 3}
    assert KdfParams.from_json(q.to_json()) == q
    # Numbers written as strings by a hand-edited file still parse.
    assert KdfParams.from_json({"memory_kib": "64", "iterations": "1", "lanes": "1"}) == KdfParams(
        64, 1, 1
    )


@pytest.mark.parametrize(
    ("memory_kib", "iterations", "lanes"),
    [(0, 1, 1), (7, 1, 1), (15, 1, 2), (1024, 0, 1), (1024, -1, 1), (1024, 1, 0), (1024, 1, -2)],
)
def test_kdf_params_validation(memory_kib: int, iterations: int, lanes: int) -> None:
    with pytest.raises(UsageError):
        KdfParams(memory_kib=memory_kib, iterations=iterations, lanes=lanes)


def test_kdf_params_minimum_is_accepted() -> None:
    assert KdfParams(memory_kib=8, iterations=1, lanes=1).memory_kib == 8
    assert KdfParams(memory_kib=16, iterations=1, lanes=2).lanes == 2


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        "memory",
        {},
        {"memory_kib": 1024, "iterations": 1},
        {"memory_kib": "lots", "iterations": 1, "lanes": 1},
        {"memory_kib": None, "iterations": 1, "lanes": 1},
    ],
)
def test_kdf_params_from_bad_json_is_unsupported_format(doc: object) -> None:
    with pytest.raises(UnsupportedFormat):
        KdfParams.from_json(doc)


def test_derive_key_is_deterministic_and_depends_on_every_input() -> None:
    salt = b"s" * 16
    k = derive_key(b"pw", salt, FAST_KDF)
    assert len(k) == 32
    assert derive_key(b"pw", salt, FAST_KDF) == k
    assert derive_key(b"pW", salt, FAST_KDF) != k
    assert derive_key(b"pw", b"t" * 16, FAST_KDF) != k
    assert derive_key(b"pw", salt, KdfParams(memory_kib=8 * 1024, iterations=2)) != k


# --- master key -------------------------------------------------------------------------------


def test_master_key_generate_is_random_and_well_formed() -> None:
    a, b = MasterKey.generate(), MasterKey.generate()
    assert len(a.enc) == len(a.id_key) == 32
    assert a.enc != b.enc and a.id_key != b.id_key and a.enc != a.id_key
    assert 0 <= a.chunker_seed < 2**CHUNKER_SEED_BITS
    # Secrets never show in a repr (which ends up in logs and tracebacks).
    assert a.enc.hex() not in repr(a) and str(a.chunker_seed) not in repr(a)


def test_master_key_bytes_round_trip() -> None:
    m = MasterKey.generate()
    again = MasterKey.from_bytes(m.to_bytes())
    assert again == m
    assert again.envelope().open(m.envelope().seal(b"x", AAD), AAD) == b"x"


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"{}",
        b'{"enc": "AAAA", "id": "AAAA"}',
        json.dumps({"enc": "AAAA", "id": "AAAA", "chunker_seed": 1}).encode(),  # 3-byte keys
        json.dumps(
            {"enc": base64.b64encode(b"k" * 32).decode(), "id": "%%%", "chunker_seed": 1}
        ).encode(),
        json.dumps(
            {
                "enc": base64.b64encode(b"k" * 32).decode(),
                "id": base64.b64encode(b"i" * 32).decode(),
                "chunker_seed": "seed",
            }
        ).encode(),
    ],
)
def test_master_key_from_bad_bytes_is_unsupported_format(data: bytes) -> None:
    with pytest.raises(UnsupportedFormat):
        MasterKey.from_bytes(data)


def test_blob_id_is_keyed() -> None:
    a, b = MasterKey.generate(), MasterKey.generate()
    data = b"the same chunk of data" * 100
    ida = a.blob_id(data)
    assert len(ida) == 32
    # Same key, same data: same id (dedup), whatever buffer type holds the data.
    assert a.blob_id(data) == ida
    assert a.blob_id(bytearray(data)) == ida
    assert a.blob_id(memoryview(data)) == ida
    # Another key: another id (ids reveal nothing without the key).
    assert b.blob_id(data) != ida
    # Only the id key matters, not the encryption key or the seed.
    same_id_key = MasterKey(b.enc, a.id_key, b.chunker_seed)
    assert same_id_key.blob_id(data) == ida
    # Different data, different id; and the id is not the plain (unkeyed) BLAKE3.
    assert a.blob_id(data + b"!") != ida
    import blake3

    assert blake3.blake3(data).digest() != ida


# --- key files --------------------------------------------------------------------------------


def make_keyfile(master: MasterKey, password: bytes = b"hunter2") -> bytes:
    return wrap_master_key(
        master, password, params=FAST_KDF, created=CREATED, host="box", username="ops"
    )


def test_keyfile_wrap_unwrap_round_trip() -> None:
    master = MasterKey.generate()
    data = make_keyfile(master, b"correct horse")
    assert unwrap_master_key(data, b"correct horse") == master
    doc = json.loads(data)
    assert doc["version"] == 1 and doc["kdf"] == "argon2id"
    assert doc["kdf_params"] == FAST_KDF.to_json()
    assert len(base64.b64decode(doc["salt"])) == 16
    # The key file holds no secret in clear.
    for secret in (master.enc, master.id_key):
        assert secret not in data
        assert base64.b64encode(secret) not in data
    assert b"correct horse" not in data
    info = read_key_info(data)
    assert (info.host, info.username, info.kdf) == ("box", "ops", FAST_KDF)
    assert datetime.fromisoformat(info.created) == CREATED


def test_keyfiles_use_fresh_salts() -> None:
    master = MasterKey.generate()
    a, b = make_keyfile(master), make_keyfile(master)
    assert json.loads(a)["salt"] != json.loads(b)["salt"]
    assert json.loads(a)["data"] != json.loads(b)["data"]
    assert unwrap_master_key(a, b"hunter2") == unwrap_master_key(b, b"hunter2") == master


@pytest.mark.parametrize("wrong", [b"hunter3", b"", b"Hunter2", b"hunter2 ", b"hunter"])
def test_keyfile_wrong_password(wrong: bytes) -> None:
    data = make_keyfile(MasterKey.generate(), b"hunter2")
    with pytest.raises(WrongPassword) as info:
        unwrap_master_key(data, wrong)
    assert info.value.exit_code == EXIT_WRONG_PASSWORD


def test_keyfile_with_damaged_data_fails_authentication() -> None:
    """A flipped bit in the wrapped key cannot be told apart from a wrong password; it must
    never yield a different master key."""
    data = make_keyfile(MasterKey.generate())
    doc = json.loads(data)
    sealed = bytearray(base64.b64decode(doc["data"]))
    sealed[len(sealed) // 2] ^= 0x10
    doc["data"] = base64.b64encode(bytes(sealed)).decode()
    with pytest.raises(WrongPassword):
        unwrap_master_key(json.dumps(doc).encode(), b"hunter2")


def test_keyfile_aad_binds_the_role() -> None:
    """An envelope under the wrapping key but with another role is not a key file."""
    master = MasterKey.generate()
    data = make_keyfile(master)
    doc = json.loads(data)
    wrapping = Envelope(derive_key(b"hunter2", base64.b64decode(doc["salt"]), FAST_KDF))
    assert wrapping.open(base64.b64decode(doc["data"]), KEY_AAD) == master.to_bytes()
    doc["data"] = base64.b64encode(wrapping.seal(master.to_bytes(), b"sv1:other")).decode()
    with pytest.raises(WrongPassword):
        unwrap_master_key(json.dumps(doc).encode(), b"hunter2")


def _mutated(keyfile: bytes, **changes: object) -> bytes:
    doc = json.loads(keyfile)
    for k, v in changes.items():
        if v is KeyError:
            del doc[k]
        else:
            doc[k] = v
    return json.dumps(doc).encode()


MALFORMED = {
    "not json": lambda d: b"\x00\xffgarbage",
    "empty": lambda d: b"",
    "json list": lambda d: b"[1, 2]",
    "version 2": lambda d: _mutated(d, version=2),
    "no version": lambda d: _mutated(d, version=KeyError),
    "scrypt": lambda d: _mutated(d, kdf="scrypt"),
    "no kdf params": lambda d: _mutated(d, kdf_params=KeyError),
    "kdf params not a dict": lambda d: _mutated(d, kdf_params=[1, 2, 3]),
    "no salt": lambda d: _mutated(d, salt=KeyError),
    "no data": lambda d: _mutated(d, data=KeyError),
    # Both decode to too few salt bytes for Argon2id (base64 without validation drops "*").
    "salt not base64": lambda d: _mutated(d, salt="***"),
    "salt too short": lambda d: _mutated(d, salt=base64.b64encode(b"salt").decode()),
    "data not a string": lambda d: _mutated(d, data=12),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_keyfile_is_unsupported_format(case: str) -> None:
    data = MALFORMED[case](make_keyfile(MasterKey.generate()))
    with pytest.raises(UnsupportedFormat):
        unwrap_master_key(data, b"hunter2")


@pytest.mark.parametrize(
    "params",
    [
        {"memory_kib": 0, "iterations": 1, "lanes": 1},
        {"memory_kib": 8192, "iterations": 0, "lanes": 1},
        {"memory_kib": 8192, "iterations": 1, "lanes": 0},
        # Costs a tampered key file could use to exhaust memory or CPU. All but the first are
        # cheap to derive, so a missing bound fails the test (wrong error) rather than hangs.
        {"memory_kib": 2**32, "iterations": 1, "lanes": 1},
        {"memory_kib": 8 * 65, "iterations": 1, "lanes": 65},
        {"memory_kib": 8, "iterations": 1001, "lanes": 1},
    ],
)
def test_keyfile_with_out_of_range_kdf_params_is_unsupported_format(
    params: dict[str, int],
) -> None:
    """A key file is repository data, not a command line: impossible parameters in it mean a
    damaged or foreign file (UnsupportedFormat, which `Repository.open` skips with a notice),
    not a usage error (exit 2) that aborts opening even when another key would work."""
    data = _mutated(make_keyfile(MasterKey.generate()), kdf_params=params)
    with pytest.raises(UnsupportedFormat):
        unwrap_master_key(data, b"hunter2")
    with pytest.raises(UnsupportedFormat):
        read_key_info(data)


def test_keyfile_with_malformed_master_key_inside_is_unsupported_format() -> None:
    """The password is right but the sealed payload is not a master key."""
    salt = os.urandom(16)
    wrapping = Envelope(derive_key(b"hunter2", salt, FAST_KDF))
    doc = {
        "version": 1,
        "kdf": "argon2id",
        "kdf_params": FAST_KDF.to_json(),
        "salt": base64.b64encode(salt).decode(),
        "created": CREATED.isoformat(),
        "host": "box",
        "username": "ops",
        "data": base64.b64encode(wrapping.seal(b'{"enc": "AAAA"}', KEY_AAD)).decode(),
    }
    with pytest.raises(UnsupportedFormat):
        unwrap_master_key(json.dumps(doc).encode(), b"hunter2")


def test_envelope_seal_many_seals_each_under_its_own_aad_and_nonce() -> None:
    env = Envelope(key32(1))
    plains = [b"", b"one", b"same" * 100, b"same" * 100]
    aads = [b"sv1:a", b"sv1:b", b"sv1:c", b"sv1:c"]
    sealed = env.seal_many(plains, aads)
    assert [env.open(s, aad) for s, aad in zip(sealed, aads, strict=True)] == plains
    assert [len(s) for s in sealed] == [len(p) + OVERHEAD for p in plains]
    assert len({s[:NONCE_SIZE] for s in sealed}) == 4  # every nonce fresh
    assert sealed[2] != sealed[3]
    with pytest.raises(IntegrityError):
        env.open(sealed[1], b"sv1:a")
    assert env.seal_many([], []) == []
    with pytest.raises(ValueError):
        env.seal_many([b"x"], [])
