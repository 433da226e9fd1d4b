"""The Dockerfile parser: directives, continuations, comments, forms, heredocs, errors."""

from __future__ import annotations

import pytest

from isobox.build.parser import DockerfileError, parse


def test_instructions_case_insensitive_and_lines() -> None:
    df = parse("from busybox\n\n# a comment\nrun echo hi\n")
    assert [(i.cmd, i.line) for i in df.instructions] == [("FROM", 1), ("RUN", 4)]
    assert df.instructions[1].args == ("echo hi",)
    assert df.instructions[1].original == "RUN echo hi"


def test_continuation_drops_comment_and_empty_lines() -> None:
    df = parse("FROM x\nRUN echo a \\\n# inside\n\n    b \\\n  c\nCMD d\n")
    run = df.instructions[1]
    assert run.rest == "echo a     b   c"
    assert (run.line, run.end_line) == (2, 6)
    assert df.instructions[2].line == 7


def test_escape_directive_backtick() -> None:
    df = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo ok\n")
    assert df.escape == "`"
    assert df.instructions[1].rest == "dir c:\\   && echo ok"


def test_directives_only_at_top() -> None:
    df = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM x\n")
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    late = parse("FROM x\n# escape=`\nRUN a \\\n b\n")
    assert late.escape == "\\" and late.instructions[1].rest == "a  b"
    after_comment = parse("# hello\n# escape=`\nFROM x\n")
    assert after_comment.escape == "\\"


def test_duplicate_and_bad_escape() -> None:
    with pytest.raises(DockerfileError, match="line 2"):
        parse("# escape=`\n# escape=\\\nFROM x\n")
    with pytest.raises(DockerfileError, match="invalid escape"):
        parse("# escape=x\nFROM x\n")


def test_json_and_shell_forms() -> None:
    df = parse('FROM x\nCMD ["a", "b c"]\nENTRYPOINT echo $HOME\nRUN [not json\n'
               'SHELL ["/bin/bash", "-c"]\nVOLUME ["/a", "/b"]\nVOLUME /c /d\n')
    cmd, entry, run, shell, vol1, vol2 = df.instructions[1:]
    assert cmd.json and cmd.args == ("a", "b c")
    assert not entry.json and entry.args == ("echo $HOME",)
    assert not run.json and run.args == ("[not json",)
    assert shell.json and shell.args == ("/bin/bash", "-c")
    assert vol1.args == ("/a", "/b") and vol2.args == ("/c", "/d")


def test_flags() -> None:
    df = parse("FROM --platform=linux/amd64 x AS build\n"
               "COPY --from=build --chown=1:2 --chmod=600 /a /b\n")
    frm, copy = df.instructions
    assert frm.flag("platform") == "linux/amd64" and frm.args == ("x", "AS", "build")
    assert copy.flag("from") == "build" and copy.flag("chown") == "1:2"
    assert copy.args == ("/a", "/b")
    with pytest.raises(DockerfileError, match="line 2: unknown flag: --bogus"):
        parse("FROM x\nCOPY --bogus=1 a b\n")


def test_heredocs() -> None:
    text = ("FROM x\nRUN <<EOF\necho one\n  echo two\nEOF\n"
            "COPY <<-'END' /etc/conf\n\tliteral $X\n\tEND\nRUN echo after\n")
    run, copy, after = parse(text).instructions[1:]
    assert run.heredocs[0].content == "echo one\n  echo two\n"
    assert run.heredocs[0].expand
    doc = copy.heredocs[0]
    assert (doc.name, doc.content, doc.expand, doc.chomp) == ("END", "literal $X\n", False,
                                                               True)
    assert copy.args == ("<<-'END'", "/etc/conf")
    assert after.line == 9


def test_two_heredocs_on_one_line() -> None:
    run = parse("FROM x\nRUN cat <<A <<B\na\nA\nb\nB\n").instructions[1]
    assert [h.content for h in run.heredocs] == ["a\n", "b\n"]


def test_errors_name_the_line() -> None:
    with pytest.raises(DockerfileError, match="line 3: unknown instruction: FORM"):
        parse("FROM x\n\nFORM y\n")
    with pytest.raises(DockerfileError, match="line 2: unterminated heredoc"):
        parse("FROM x\nRUN <<EOF\necho\n")
    with pytest.raises(DockerfileError, match="line 2: ENV must have two arguments"):
        parse("FROM x\nENV ONLY\n")
    with pytest.raises(DockerfileError, match="line 2: Syntax error - can't find ="):
        parse("FROM x\nLABEL a=1 b\n")
    with pytest.raises(DockerfileError, match="line 1: FROM requires either one or three"):
        parse("FROM a b\n")
    with pytest.raises(DockerfileError, match="line 2: SHELL requires the arguments to be in"):
        parse("FROM x\nSHELL /bin/bash\n")
    with pytest.raises(DockerfileError, match="line 2: COPY requires at least two"):
        parse("FROM x\nCOPY a\n")
    with pytest.raises(DockerfileError, match="ONBUILD isn't allowed"):
        parse("FROM x\nONBUILD ONBUILD RUN x\n")
    with pytest.raises(DockerfileError, match="no instructions"):
        parse("# just a comment\n\n")


def test_crlf_and_bom() -> None:
    df = parse("\ufeffFROM x\r\nRUN a \\\r\n b\r\n")
    assert df.instructions[1].rest == "a  b"


def test_healthcheck_and_onbuild_checked() -> None:
    df = parse("FROM x\nHEALTHCHECK --interval=5s --retries=3 CMD true\nHEALTHCHECK NONE\n"
               "ONBUILD RUN echo hi\n")
    assert df.instructions[1].flag("interval") == "5s"
    with pytest.raises(DockerfileError, match="line 2: HEALTHCHECK requires CMD or NONE"):
        parse("FROM x\nHEALTHCHECK true\n")
