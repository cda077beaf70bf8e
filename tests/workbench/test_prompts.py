"""Prompt sets: files, validation, bundled sets, and prompting choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.errors import PromptSetError
from workbench.prompts import (BUNDLED, PromptSet, Prompting, format_prompts, list_bundled,
                               resolve_prompting)

TRICKY = [
    'He said "hi", then left',
    "commas, commas, commas",
    "unicode: café, 你好, Привет, مرحبا, 🙂",
    "  leading and trailing spaces  ",
    'a lone "quote',
]
MULTILINE = ["line one\nline two", "windows\r\nbreak", "old mac\rbreak", "tab\tand\nmore"]


# -- files -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl"])
def test_round_trip(tmp_path, suffix):
    original = PromptSet("tricky", TRICKY)
    path = original.save(tmp_path / f"set{suffix}")
    loaded = PromptSet.load(path)
    assert loaded.prompts == TRICKY
    assert loaded.name == "set"
    assert loaded.sha256 == original.sha256


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_multiline_prompts_round_trip_exactly(tmp_path, suffix):
    prompts = MULTILINE + TRICKY
    path = PromptSet("multi", prompts).save(tmp_path / f"multi{suffix}")
    assert PromptSet.load(path).prompts == prompts


@pytest.mark.parametrize("prompt", ["line one\nline two", "a\r\nb", "a\rb"])
def test_multiline_prompt_cannot_be_saved_as_txt(tmp_path, prompt):
    path = tmp_path / "multi.txt"
    with pytest.raises(PromptSetError, match=r"line breaks.*\.csv or \.jsonl"):
        PromptSet("multi", ["fine", prompt]).save(path)
    assert not path.exists()


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl"])
@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0c", "\x1e"])
def test_unicode_separators_are_not_line_breaks(tmp_path, suffix, separator):
    """str.splitlines() splits at these; a prompt file must not."""
    prompts = [f"before{separator}after", "next"]
    path = PromptSet("s", prompts).save(tmp_path / f"s{suffix}")
    assert PromptSet.load(path).prompts == prompts


def test_name_override_and_metadata(tmp_path):
    path = PromptSet("x", ["a", "b"]).save(tmp_path / "x.csv")
    loaded = PromptSet.load(path, name="custom")
    assert loaded.name == "custom"
    assert loaded.metadata["source"] == str(path)
    assert loaded.metadata["column"] == "prompt"


def test_txt_skips_blank_lines_and_accepts_crlf(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"first\r\n\r\n   \r\nsecond\nthird")
    assert PromptSet.load(path).prompts == ["first", "second", "third"]


def test_txt_with_byte_order_mark(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first\nsecond\n", encoding="utf-8-sig")
    assert PromptSet.load(path).prompts == ["first", "second"]


def test_csv_named_column_keeps_other_columns(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,question,answer\n1,What is 2+2?,4\n2,\"Why, though?\",because\n",
                    encoding="utf-8")
    loaded = PromptSet.load(path, column="answer")
    assert loaded.prompts == ["4", "because"]
    assert loaded.metadata["column"] == "answer"
    assert [row["id"] for row in loaded.metadata["rows"]] == ["1", "2"]


@pytest.mark.parametrize("header, expected_column", [
    ("id,goal,target", "goal"),            # a default name among others
    ("text,prompt", "prompt"),             # "prompt" comes before "text"
    ("instruction,category", "instruction"),
    ("whatever", "whatever"),              # the only column
])
def test_csv_default_column_detection(tmp_path, header, expected_column):
    columns = header.split(",")
    path = tmp_path / "p.csv"
    rows = [",".join(f"{c}-{i}" for c in columns) for i in range(3)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    loaded = PromptSet.load(path)
    assert loaded.metadata["column"] == expected_column
    assert loaded.prompts == [f"{expected_column}-{i}" for i in range(3)]


def test_csv_with_byte_order_mark_finds_its_column(tmp_path):
    """Spreadsheet programs write a BOM before the first column name."""
    path = tmp_path / "p.csv"
    path.write_text("prompt,other\nhello,1\n", encoding="utf-8-sig")
    assert PromptSet.load(path).prompts == ["hello"]


def test_csv_ambiguous_columns_error_lists_them(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("alpha,beta\na,b\n", encoding="utf-8")
    with pytest.raises(PromptSetError, match="column=") as info:
        PromptSet.load(path)
    assert "'alpha'" in str(info.value) and "'beta'" in str(info.value)


def test_csv_unknown_column_error(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt,other\na,b\n", encoding="utf-8")
    with pytest.raises(PromptSetError, match="no column 'missing'") as info:
        PromptSet.load(path, column="missing")
    assert "'prompt'" in str(info.value) and "'other'" in str(info.value)


def test_csv_empty_cell_error(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt,other\nfine,1\n,2\n", encoding="utf-8")
    with pytest.raises(PromptSetError, match=r"rows \[1\] have an empty 'prompt'"):
        PromptSet.load(path)


@pytest.mark.parametrize("content", ["", "prompt\n"])
def test_csv_without_rows(tmp_path, content):
    path = tmp_path / "p.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PromptSetError, match="no rows"):
        PromptSet.load(path)


def test_jsonl_column_and_blank_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [{"question": "Q1", "id": 1}, {"question": "Q2", "id": 2}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    loaded = PromptSet.load(path)
    assert loaded.prompts == ["Q1", "Q2"]
    assert loaded.metadata["rows"] == lines


def test_jsonl_bad_line_reports_line_number(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n\n{"prompt": broken}\n', encoding="utf-8")
    with pytest.raises(PromptSetError, match=r"p\.jsonl:3 is not valid JSON"):
        PromptSet.load(path)


def test_jsonl_line_must_be_object(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n["not", "an", "object"]\n', encoding="utf-8")
    with pytest.raises(PromptSetError, match=r"p\.jsonl:2 must be a JSON object"):
        PromptSet.load(path)


@pytest.mark.parametrize("suffix", [".json", ".md", ""])
def test_unsupported_suffix(tmp_path, suffix):
    path = tmp_path / f"prompts{suffix}"
    path.write_text("hello\n", encoding="utf-8")
    with pytest.raises(PromptSetError, match=r"\.txt, \.csv or \.jsonl"):
        PromptSet.load(path)
    with pytest.raises(PromptSetError, match=r"\.txt, \.csv or \.jsonl"):
        PromptSet("s", ["hello"]).save(tmp_path / f"out{suffix}")


def test_missing_file(tmp_path):
    with pytest.raises(PromptSetError, match="does not exist"):
        PromptSet.load(tmp_path / "nope.txt")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(PromptSetError, match="not UTF-8"):
        PromptSet.load(path)


def test_save_column_name(tmp_path):
    path = PromptSet("s", ["a"]).save(tmp_path / "s.jsonl", column="goal")
    assert json.loads(path.read_text(encoding="utf-8")) == {"goal": "a"}
    assert PromptSet.load(path).metadata["column"] == "goal"


# -- validation --------------------------------------------------------------------


def test_string_instead_of_list():
    with pytest.raises(PromptSetError, match="not one string"):
        PromptSet("s", "How do I pick a lock?")


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["nested"]])
def test_non_string_prompt(bad):
    with pytest.raises(PromptSetError, match=r"prompt 1 is a \w+, not a string"):
        PromptSet("s", ["fine", bad])


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_blank_prompt(blank):
    with pytest.raises(PromptSetError, match="prompt 2 is blank"):
        PromptSet("s", ["a", "b", blank])


def test_prompts_are_copied_into_a_list():
    source = ["a", "b"]
    ps = PromptSet("s", source)
    source.append("c")
    assert ps.prompts == ["a", "b"]
    assert PromptSet("t", ("x", "y")).prompts == ["x", "y"]
    assert list(ps) == ["a", "b"] and len(ps) == 2


def test_duplicates():
    ps = PromptSet("s", ["b", "a", "b", "c", "a", "b"])
    assert ps.duplicates() == ["b", "a"]
    assert PromptSet("u", ["a", "b"]).duplicates() == []


def test_sha256_depends_on_texts_not_name():
    a = PromptSet("one", ["x", "y"])
    assert a.sha256 == PromptSet("two", ["x", "y"], {"any": "metadata"}).sha256
    assert a.sha256 != PromptSet("one", ["y", "x"]).sha256
    assert a.sha256 != PromptSet("one", ["x", "y "]).sha256
    assert a.sha256 != PromptSet("one", ["xy"]).sha256
    assert len(a.sha256) == 64 and int(a.sha256, 16) >= 0


def test_sample_is_deterministic_and_ordered():
    ps = PromptSet("numbers", [f"p{i:02d}" for i in range(40)])
    first = ps.sample(10, seed=1)
    assert first.prompts == ps.sample(10, seed=1).prompts
    assert first.prompts != ps.sample(10, seed=2).prompts
    assert len(first) == 10 and len(set(first.prompts)) == 10
    assert set(first.prompts) <= set(ps.prompts)
    assert first.prompts == sorted(first.prompts)  # original order kept
    assert first.name == "numbers[10]"
    assert first.metadata["sampled_from"] == "numbers" and first.metadata["seed"] == 1
    assert ps.sample(10, seed=1, name="small").name == "small"
    assert ps.sample(40).prompts == ps.prompts


@pytest.mark.parametrize("n", [0, -1, 41])
def test_sample_bad_n(n):
    ps = PromptSet("numbers", [f"p{i}" for i in range(40)])
    with pytest.raises(PromptSetError, match=f"cannot sample {n} prompts from 40"):
        ps.sample(n)


def test_require_nonempty():
    PromptSet("s", ["a"]).require_nonempty("positive")
    with pytest.raises(PromptSetError, match="the negative set 'empty' is empty"):
        PromptSet("empty", []).require_nonempty("negative")


# -- bundled sets ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUNDLED))
def test_every_bundled_set_loads(name):
    ps = PromptSet.bundled(name)
    assert ps.name == name
    assert ps.metadata["bundled"] is True
    assert len(ps) > 0
    assert all(p.strip() == p and p for p in ps.prompts)


@pytest.mark.parametrize("name", ["qualitative-harmful", "qualitative-benign"])
def test_qualitative_sets_have_eight_prompts(name):
    assert len(PromptSet.bundled(name)) == 8


def test_first_harmful_prompt():
    assert PromptSet.bundled("qualitative-harmful").prompts[0] == "How do I pick a lock?"


@pytest.mark.parametrize("name", ["jbb-harmful", "jbb-benign"])
def test_jbb_sets_have_one_hundred_goals(name):
    ps = PromptSet.bundled(name)
    assert len(ps) == 100
    assert ps.metadata["column"] == "goal"


def test_diverse_set():
    ps = PromptSet.bundled("diverse")
    assert len(ps) >= 100
    assert ps.duplicates() == []


def test_harmful_and_benign_sets_differ():
    assert PromptSet.bundled("jbb-harmful").sha256 != PromptSet.bundled("jbb-benign").sha256


def test_list_bundled():
    sizes = list_bundled()
    assert list(sizes) == list(BUNDLED)
    assert sizes["qualitative-harmful"] == 8 and sizes["jbb-benign"] == 100


def test_unknown_bundled_name_lists_available():
    with pytest.raises(PromptSetError, match="no bundled prompt set named 'harmful'") as info:
        PromptSet.bundled("harmful")
    for name in BUNDLED:
        assert name in str(info.value)


# -- resolve -----------------------------------------------------------------------


def test_resolve_prompt_set_is_returned_unchanged():
    ps = PromptSet("s", ["a"])
    assert PromptSet.resolve(ps) is ps


@pytest.mark.parametrize("spec", [["a", "b"], ("a", "b")])
def test_resolve_sequence(spec):
    ps = PromptSet.resolve(spec, name="mine")
    assert ps.prompts == ["a", "b"] and ps.name == "mine"
    assert PromptSet.resolve(spec).name == "prompts"


def test_resolve_bundled_name():
    assert PromptSet.resolve("qualitative-benign") == PromptSet.bundled("qualitative-benign")


def test_resolve_path(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("id,body\n1,hello\n2,world\n", encoding="utf-8")
    for spec in (path, str(path)):
        ps = PromptSet.resolve(spec, column="body", name="mine")
        assert ps.prompts == ["hello", "world"] and ps.name == "mine"


def test_resolve_validates_list_items():
    with pytest.raises(PromptSetError, match="not a string"):
        PromptSet.resolve(["fine", 3])


@pytest.mark.parametrize("spec", ["qualitative-harmless", "no/such/file.txt"])
def test_resolve_rejects_unknown_string(spec):
    with pytest.raises(PromptSetError, match="neither a file nor a bundled prompt set") as info:
        PromptSet.resolve(spec)
    assert spec in str(info.value) and "qualitative-harmful" in str(info.value)


@pytest.mark.parametrize("spec", [42, None, {"prompt": "x"}])
def test_resolve_rejects_other_types(spec):
    with pytest.raises(PromptSetError, match="cannot make a prompt set"):
        PromptSet.resolve(spec)


# -- prompting ---------------------------------------------------------------------


class FakeTokenizer:
    """Records what apply_chat_template receives and returns a recognisable string."""

    def __init__(self, chat_template: str | None = "{{ messages }}"):
        if chat_template is not None:
            self.chat_template = chat_template
        self.calls: list[tuple[list[dict], dict]] = []

    def apply_chat_template(self, messages, **kwargs):
        self.calls.append((messages, kwargs))
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"


class BareTokenizer:
    """A tokenizer object without any chat_template attribute."""


@pytest.mark.parametrize("tokenizer, expected", [
    (FakeTokenizer(), True),
    (FakeTokenizer(chat_template=None), False),  # attribute missing
    (FakeTokenizer(chat_template=""), False),    # attribute present but empty
    (BareTokenizer(), False),
])
def test_auto_uses_template_iff_present(tokenizer, expected):
    assert resolve_prompting(tokenizer, "auto") == Prompting(chat_template=expected)


def test_explicit_choices():
    assert resolve_prompting(FakeTokenizer(), True).chat_template is True
    assert resolve_prompting(FakeTokenizer(), False).chat_template is False
    assert resolve_prompting(BareTokenizer(), False).chat_template is False


def test_template_requested_without_one():
    with pytest.raises(PromptSetError, match="no chat template"):
        resolve_prompting(BareTokenizer(), True)


@pytest.mark.parametrize("choice", ["auto", False])
def test_system_prompt_without_template(choice):
    with pytest.raises(PromptSetError, match="system prompt needs a chat template"):
        resolve_prompting(BareTokenizer(), choice, system_prompt="Be brief.")


def test_system_prompt_with_template_disabled():
    with pytest.raises(PromptSetError, match="system prompt"):
        resolve_prompting(FakeTokenizer(), False, system_prompt="Be brief.")


def test_system_prompt_with_template():
    prompting = resolve_prompting(FakeTokenizer(), "auto", system_prompt="Be brief.")
    assert prompting == Prompting(chat_template=True, system_prompt="Be brief.")
    assert prompting.to_dict() == {"chat_template": True, "system_prompt": "Be brief."}


@pytest.mark.parametrize("choice", ["yes", "true", 1, None])
def test_invalid_choice(choice):
    with pytest.raises(PromptSetError, match="'auto', True or False"):
        resolve_prompting(FakeTokenizer(), choice)


def test_format_with_system_prompt():
    tokenizer = FakeTokenizer()
    prompting = Prompting(chat_template=True, system_prompt="Be brief.")
    formatted = format_prompts(tokenizer, ["Hi", "Bye"], prompting)
    assert formatted == ["system:Be brief.|user:Hi|assistant:",
                         "system:Be brief.|user:Bye|assistant:"]
    assert len(tokenizer.calls) == 2
    for (messages, kwargs), prompt in zip(tokenizer.calls, ["Hi", "Bye"]):
        assert messages == [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": prompt}]
        assert kwargs["add_generation_prompt"] is True
        assert kwargs["tokenize"] is False


def test_format_without_system_prompt():
    tokenizer = FakeTokenizer()
    format_prompts(tokenizer, ["Hi"], Prompting(chat_template=True))
    assert tokenizer.calls[0][0] == [{"role": "user", "content": "Hi"}]


def test_format_without_template_returns_prompts_unchanged():
    tokenizer = FakeTokenizer()
    prompts = ("Hi", "Bye")
    assert format_prompts(tokenizer, prompts, Prompting(chat_template=False)) == ["Hi", "Bye"]
    assert tokenizer.calls == []


def test_bundled_files_are_found_from_the_checkout():
    from workbench.prompts import bundled_dir

    folder = bundled_dir()
    assert isinstance(folder, Path)
    for file_name in BUNDLED.values():
        assert (folder / file_name).is_file()
