"""--change: Dockerfile instructions applied to an image config, as Docker does."""

from __future__ import annotations

import pytest

from isobox.errors import InvalidArgument
from isobox.images.changes import apply_changes
from isobox.oci.image_spec import ContainerConfig


def _apply(*changes: str, base: ContainerConfig | None = None) -> ContainerConfig:
    return apply_changes(base, list(changes))


@pytest.mark.parametrize(("change", "cmd"), [
    ('CMD ["sh"]', ["sh"]),
    ('CMD ["sh", "-c", "echo $HOME"]', ["sh", "-c", "echo $HOME"]),
    ("CMD echo hi", ["/bin/sh", "-c", "echo hi"]),
    ("cmd   echo  $HOME ", ["/bin/sh", "-c", "echo  $HOME"]),
    ("CMD [not json", ["/bin/sh", "-c", "[not json"]),
    ("CMD [1, 2]", ["/bin/sh", "-c", "[1, 2]"]),
])
def test_cmd_exec_and_shell_forms(change: str, cmd: list[str]) -> None:
    assert _apply(change).cmd == cmd


def test_cmd_shell_form_uses_the_config_shell() -> None:
    assert _apply("CMD echo hi", base=ContainerConfig(shell=["/bin/bash", "-c"])).cmd == [
        "/bin/bash", "-c", "echo hi"]


def test_entrypoint_forms_and_cmd_reset() -> None:
    config = _apply('ENTRYPOINT ["/init"]', base=ContainerConfig(cmd=["old"]))
    assert config.entrypoint == ["/init"] and config.cmd is None
    config = _apply('CMD ["x"]', "ENTRYPOINT exec /init", base=ContainerConfig(cmd=["old"]))
    assert config.entrypoint == ["/bin/sh", "-c", "exec /init"] and config.cmd == ["x"]
    assert _apply("ENTRYPOINT []", base=ContainerConfig(entrypoint=["a"])).entrypoint is None


def test_env_forms_and_expansion() -> None:
    config = _apply("ENV A=1 B=2", "ENV C 3 4", 'ENV D="hello world" E=a\\ b F=\'$A\'',
                    "ENV G=$A-${B}-${NOPE:-dflt}-${A:+set}", "ENV A=9",
                    base=ContainerConfig(env=["PATH=/bin"]))
    assert config.env == ["PATH=/bin", "A=9", "B=2", "C=3 4", "D=hello world", "E=a b",
                          "F=$A", "G=1-2-dflt-set"]


def test_env_in_one_instruction_expands_from_before_it() -> None:
    assert _apply("ENV A=1", "ENV A=2 B=$A").env == ["A=2", "B=1"]


def test_workdir_user_stopsignal() -> None:
    config = _apply("WORKDIR /app", "WORKDIR sub/../src", "ENV U=nobody", "USER $U:65534",
                    "STOPSIGNAL SIGQUIT")
    assert (config.working_dir, config.user, config.stop_signal) == (
        "/app/src", "nobody:65534", "SIGQUIT")
    assert _apply("WORKDIR rel").working_dir == "/rel"
    for sig in ("TERM", "9", "SIGRTMIN+3"):
        assert _apply(f"STOPSIGNAL {sig}").stop_signal == sig


def test_expose_label_volume() -> None:
    config = _apply("EXPOSE 80 53/udp 8000-8001/TCP", 'LABEL a=b "c d"="e f"',
                    "LABEL legacy form value", 'VOLUME ["/data", "/logs"]', "VOLUME /x /y")
    assert config.exposed_ports == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert config.labels == {"a": "b", "c d": "e f", "legacy": "form value"}
    assert config.volumes == {"/data": {}, "/logs": {}, "/x": {}, "/y": {}}


def test_onbuild_is_kept_verbatim() -> None:
    assert _apply("ONBUILD RUN echo $X").on_build == ["RUN echo $X"]


def test_changes_keep_the_base_config() -> None:
    base = ContainerConfig(env=["A=1"], cmd=["sh"], labels={"k": "v"})
    config = _apply("LABEL x=y", base=base)
    assert (config.env, config.cmd, config.labels) == (["A=1"], ["sh"], {"k": "v", "x": "y"})
    assert base.labels == {"k": "v"}


@pytest.mark.parametrize("change", [
    "RUN echo hi", "FROM busybox", "COPY a b", "ADD a b", "HEALTHCHECK NONE", "SHELL [\"sh\"]",
    "ENV", "ENV A", "ENV =1", "ENV A=1 B", "LABEL", "EXPOSE", "EXPOSE http", "EXPOSE 0",
    "EXPOSE 70000", "EXPOSE 90-80", "VOLUME", 'VOLUME [""]', "WORKDIR", "USER", "USER a b",
    "STOPSIGNAL", "STOPSIGNAL NOPE", "STOPSIGNAL 99", "CMD", "ONBUILD ONBUILD X",
    "ONBUILD FROM x", 'ENV A="unterminated', "ENV A='unterminated", "ENV A=${B",
])
def test_refused_changes(change: str) -> None:
    with pytest.raises(InvalidArgument):
        _apply(change)


def test_unsupported_instruction_message_names_the_valid_ones() -> None:
    with pytest.raises(InvalidArgument, match=r"RUN is not a valid change command.*CMD"):
        _apply("RUN x")
