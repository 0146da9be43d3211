from typing import Literal

import pytest

from workbench.core.errors import InputError
from workbench.core.kv import split_kv
from workbench.plugin import Job, Param


class Demo(Job):
    name = "demo_params"
    epochs: int = Param(3, min=1, max=100, help="passes")
    lr: float = Param(0.1, min=0.0, help="step size")
    flag: bool = Param(False)
    opt: Literal["sgd", "adam"] = Param("adam")
    layers: list[str] = Param([], help="names")
    text: str = Param("")


def test_declaration_order_kinds_and_defaults():
    params = Demo.params()
    assert list(params) == ["epochs", "lr", "flag", "opt", "layers", "text"]
    assert [p.kind for p in params.values()] == ["int", "float", "bool", "choice", "list", "str"]
    assert params["opt"].choices == ("sgd", "adam")
    job = Demo()
    assert (job.epochs, job.lr, job.flag, job.opt, job.layers) == (3, 0.1, False, "adam", [])


def test_cli_strings_are_converted():
    job = Demo(epochs="7", lr="1e-3", flag="true", opt="sgd", layers="a,b", text="x")
    assert (job.epochs, job.lr, job.flag, job.opt, job.layers, job.text) == (7, 1e-3, True, "sgd", ["a", "b"], "x")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"epochs": "-1"}, "below the minimum"),
    ({"epochs": "1000"}, "above the maximum"),
    ({"lr": "abc"}, "not a valid float"),
    ({"lr": "nan"}, "not a valid float"),
    ({"epochs": "2.5"}, "not a valid int"),
    ({"flag": "maybe"}, "not a valid bool"),
    ({"opt": "rmsprop"}, "not one of sgd, adam"),
    ({"nope": 1}, "unknown parameter 'nope'"),
])
def test_bad_values_are_input_errors(kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        Demo(**kwargs)


def test_split_kv_keeps_nested_specs_and_lists():
    assert split_kv("student=zoo:seed_cnn:width=0.25,epochs=3", "x") == {
        "student": "zoo:seed_cnn:width=0.25", "epochs": "3"}
    assert split_kv("method=average,with=v0003,v0004", "x") == {"method": "average", "with": "v0003,v0004"}
    with pytest.raises(InputError):
        split_kv("novalue", "x")


def test_a_param_without_annotation_is_a_declaration_error():
    with pytest.raises(TypeError):
        class Bad(Job):  # noqa: F841
            name = "bad"
            x = Param(1)


def test_a_quoted_value_keeps_its_commas_and_colons():
    from workbench.core.errors import InputError
    from workbench.core.pipeline import parse_job_flag

    step = parse_job_flag("distill:student='zoo:tiny_llama:hidden=128,layers=2',epochs=3")
    assert step.params == {"student": "zoo:tiny_llama:hidden=128,layers=2", "epochs": "3"}
    assert split_kv('a="x,y",b=1', "t") == {"a": "x,y", "b": "1"}
    with pytest.raises(InputError, match="unclosed quote"):
        split_kv("a='x,y", "t")
