from simulacra.coverage import OUTPUT, render


def test_implementation_table_is_generated_from_the_routes():
    assert OUTPUT.read_text() == render(), "run: python -m simulacra.coverage"
