from conftest import Account


def test_put_get_roundtrip(client, alice: Account) -> None:
    r = client.put("/api/v1/files/a.txt", content=b"hello", auth=alice.auth)
    assert r.status_code == 201, r.text
    r = client.get("/api/v1/files/a.txt", auth=alice.auth)
    assert r.content == b"hello"
