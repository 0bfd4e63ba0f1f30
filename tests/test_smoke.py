def test_root_welcomes_new_users(http, base_url):
    response = http.get(base_url + "/")
    assert response.status_code == 200
    assert "/identity/v2.0/tokens" in response.text
    assert "/api/v2/scenarios" in response.text
