"""Source excerpts (lab_vm.tools.excerpts): what the chapters print from the kernel and QEMU trees."""
import pytest

from lab_vm.tools.excerpts import c_function, excerpt, rst_note

C = """\
static int helper(int a);

static ssize_t
peek_show(struct device *dev, char *buf)
{
	return helper(1);
}

int helper(int a)
{
	if (a) {
		return 1;
	}
	return 0;
}
"""


def test_c_function_takes_the_definition_not_the_prototype(tmp_path):
    path = tmp_path / "x.c"
    path.write_text(C)
    assert c_function(path, "helper") == C[C.index("int helper(int a)\n{"):].rstrip("\n")
    # the return type on its own line belongs to the function
    assert c_function(path, "peek_show").startswith("static ssize_t\npeek_show(")
    assert c_function(path, "peek_show").endswith("return helper(1);\n}")
    with pytest.raises(LookupError):
        c_function(path, "missing")


def test_excerpt_and_rst_note(tmp_path):
    assert excerpt(C, "if (a)", "}", after="int helper(int a)") == "if (a) {\n\treturn 1;\n}"
    rst = tmp_path / "a.rst"
    rst.write_text("Intro\n\n.. note::\n\n   One thing.\n   Another.\n\nText\n")
    assert rst_note(rst, "One thing. Another.") == "One thing.\nAnother."
