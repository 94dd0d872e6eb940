"""Spec files the compiler must refuse before MLIR parses them (the guard in compileSpec, not
only in molt-opt): one-line MoltErrors, from the in-process compiler or molt-compile."""
import pytest

molt = pytest.importorskip("molt")


@pytest.mark.parametrize("text, cause", [
    ("", "1:1: empty input"),
    ("// a comment and nothing else\n", "1:1: empty input"),
    ("module {" + "[" * 4000 + "\n", "1:264: brackets nested more than 256 deep"),
    ("module { molt.layer @a {d_model = 0} }\n", "spec.mlir:1:"),
])
def test_bad_spec_file_is_one_line_error(tmp_path, text, cause):
    if not molt.HAS_COMPILER:
        pytest.skip("this build compiles through molt-compile (tested in test_tools)")
    spec = tmp_path / "bad.mlir"
    spec.write_text(text)
    with pytest.raises(molt.MoltError) as e:
        molt.Layer(spec, cache_dir=tmp_path / "cache")
    message = str(e.value)
    assert cause in message
    assert "\n" not in message
