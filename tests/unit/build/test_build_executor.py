"""The executor over a fake step runner: config effects, ARG scoping, cache
keys and hits, --target, tags only on success, RUN argv and env."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import pytest

from isobox.build.cache import BuildCache, cache_key
from isobox.build.executor import BuildError, BuildOptions, build
from isobox.build.steps import BaseImage, CopyItem, RunOptions
from isobox.errors import NotFound
from isobox.images.builder import Layer
from isobox.oci import image_spec as spec

BASE_CONFIG = spec.ImageConfig(architecture="amd64", os="linux", rootfs=spec.RootFS(),
                               config=spec.ContainerConfig(env=["PATH=/bin"], cmd=["sh"]))


class FakeSteps:
    def __init__(self, fail_code: int = 0) -> None:
        self.images: dict[str, BaseImage] = {}
        self.runs: list[tuple[list[str], RunOptions]] = []
        self.copies: list[list[CopyItem]] = []
        self.tags: dict[str, str] = {}
        self.fail_code = fail_code
        base = BaseImage("sha256:" + "0" * 64, BASE_CONFIG, ())
        self.images["base"] = base

    def base(self, name: str, platform: str | None) -> BaseImage:
        if name not in self.images:
            raise NotFound(name)
        return self.images[name]

    def _layer(self, what: str) -> Layer:
        digest = "sha256:" + hashlib.sha256(what.encode()).hexdigest()
        return Layer(spec.Descriptor(media_type="x", digest=digest, size=1), digest, 1)

    def run(self, parent: BaseImage, argv: Sequence[str], options: RunOptions,
            output: Callable[[bytes], None]) -> tuple[int, Layer | None]:
        self.runs.append((list(argv), options))
        output(b"ran\n")
        return self.fail_code, self._layer(repr(argv))

    def copy(self, parent: BaseImage, items: Sequence[CopyItem], *, chown: str | None,
             workdir: str, mkdir: Sequence[str] = ()) -> Layer | None:
        self.copies.append(list(items))
        return self._layer(repr(items)) if items else None

    def commit(self, layers: Sequence[Layer], config: spec.ImageConfig,
               history: Sequence[spec.History]) -> BaseImage:
        config = msgspec.structs.replace(config, history=list(history), created=None)
        raw = msgspec.json.encode([config, [layer.diff_id for layer in layers]])
        image = BaseImage("sha256:" + hashlib.sha256(raw).hexdigest(), config, tuple(layers))
        self.images[image.id] = image
        return image

    def exists(self, image_id: str) -> BaseImage | None:
        return self.images.get(image_id)

    def tag(self, image_id: str, tags: Sequence[str]) -> None:
        for tag in tags:
            self.tags[tag] = image_id


def do_build(tmp_path: Path, text: str, steps: FakeSteps | None = None,
             **kwargs: object) -> tuple[FakeSteps, str, str]:
    steps = steps or FakeSteps()
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    lines: list[str] = []
    options = BuildOptions(dockerfile=text, context_dir=str(ctx), **kwargs)  # type: ignore[arg-type]
    result = build(options, steps, BuildCache(str(tmp_path / "cache")), lines.append)
    return steps, result.image_id, "".join(lines)


def config_of(steps: FakeSteps, image_id: str) -> spec.ContainerConfig:
    config = steps.images[image_id].config.config
    assert config is not None
    return config


def test_config_instructions(tmp_path: Path) -> None:
    steps, image, out = do_build(tmp_path, """
FROM base
ENV A=1 B="two words"
ENV C ${A}-legacy value
WORKDIR /srv
WORKDIR app
USER ${A}:${A}
ENTRYPOINT ["/bin/app"]
EXPOSE 80 53/udp 8000-8001
VOLUME ["/data"]
LABEL "com.x"="y z" other=$A
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=1m30s --retries=2 CMD curl -f http://x
SHELL ["/bin/bash", "-c"]
CMD echo $A
ONBUILD RUN echo child
""", tags=["app:1"])
    c = config_of(steps, image)
    assert c.env == ["PATH=/bin", "A=1", "B=two words", "C=1-legacy value"]
    assert c.working_dir == "/srv/app" and c.user == "1:1"
    assert c.entrypoint == ["/bin/app"]
    assert c.cmd == ["/bin/bash", "-c", "echo $A"]      # no substitution in CMD
    assert c.exposed_ports == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert c.volumes == {"/data": {}}
    assert c.labels == {"com.x": "y z", "other": "1"}
    assert c.stop_signal == "SIGTERM"
    assert c.healthcheck == spec.HealthConfig(test=["CMD-SHELL", "curl -f http://x"],
                                              interval=90_000_000_000, retries=2)
    assert c.on_build == ["RUN echo child"]
    assert steps.tags == {"app:1": image}
    assert "Step 1/15 : FROM base" in out and "Successfully tagged app:1" in out
    assert all(not items for items in steps.copies)  # WORKDIR only makes directories


def test_entrypoint_drops_inherited_cmd_only(tmp_path: Path) -> None:
    steps, image, _ = do_build(tmp_path, "FROM base\nENTRYPOINT [\"e\"]\n")
    assert config_of(steps, image).cmd is None
    steps, image, _ = do_build(tmp_path, "FROM base\nCMD [\"c\"]\nENTRYPOINT [\"e\"]\n")
    assert config_of(steps, image).cmd == ["c"]


def test_arg_scoping_and_run_env(tmp_path: Path) -> None:
    text = """
ARG VERSION=1.0
ARG UNUSED_GLOBAL
FROM base
RUN echo "v=$VERSION"
ARG VERSION
ARG LOCAL=${VERSION}-local
ENV FROM_ENV=e
ARG FROM_ENV=from-arg
RUN echo hi
"""
    steps, image, out = do_build(tmp_path, text, build_args={"LOCAL": "given", "NOPE": "x"})
    first, second = steps.runs
    assert first[0] == ["/bin/sh", "-c", 'echo "v=$VERSION"']
    assert not any(e.startswith("VERSION=") for e in first[1].env)   # not in stage scope yet
    env = dict(e.partition("=")[::2] for e in second[1].env)
    assert env["VERSION"] == "1.0" and env["LOCAL"] == "given" and env["FROM_ENV"] == "e"
    assert config_of(steps, image).env == ["PATH=/bin", "FROM_ENV=e"]  # ARGs are not kept
    history = steps.images[image].config.history or []
    assert history[-1].created_by is not None
    assert history[-1].created_by == "|2 LOCAL=given VERSION=1.0 /bin/sh -c echo hi"
    assert "[Warning] One or more build-args [NOPE] were not consumed" in out


def test_from_uses_meta_args_and_stages(tmp_path: Path) -> None:
    text = """
ARG IMG=base
FROM ${IMG} AS one
ENV STAGE=one
FROM one AS two
RUN true
FROM base AS unrelated
RUN echo never
FROM two
COPY --from=one /x /y
"""
    steps, image, _ = do_build(tmp_path, text)
    assert [r[0][-1] for r in steps.runs] == ["true"]   # the unneeded stage is skipped
    assert "STAGE=one" in (config_of(steps, image).env or [])
    assert steps.copies[-1][0].image_path == "/x"
    steps2, _, _ = do_build(tmp_path, text, target="unrelated")
    assert [r[0][-1] for r in steps2.runs] == ["echo never"]


def test_cache_hit_and_miss(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("one")
    text = "FROM base\nCOPY f /f\nRUN echo hi\nENV X=1\n"
    steps, first, out = do_build(tmp_path, text)
    assert "Using cache" not in out and len(steps.runs) == 1
    steps, again, out = do_build(tmp_path, text, steps)
    assert again == first and out.count("Using cache") == 3 and len(steps.runs) == 1
    (ctx / "f").write_text("two")
    steps, changed, out = do_build(tmp_path, text, steps)
    assert changed != first and "Using cache" not in out and len(steps.runs) == 2
    steps, _, out = do_build(tmp_path, text, steps, no_cache=True)
    assert "Using cache" not in out and len(steps.runs) == 3


def test_cache_key_is_stable_and_sensitive() -> None:
    assert cache_key("p", "RUN a") == cache_key("p", "RUN a")
    assert cache_key("p", "RUN a") != cache_key("q", "RUN a")
    assert cache_key("p", "COPY a /", ["s1"]) != cache_key("p", "COPY a /", ["s2"])


def test_failing_run_tags_nothing(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as info:
        do_build(tmp_path, "FROM base\nRUN exit 7\n", FakeSteps(fail_code=7), tags=["t:1"])
    assert info.value.exit_code == 7
    assert "returned a non-zero code: 7" in str(info.value)


def test_copy_semantics(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "d").mkdir(parents=True)
    for name in ("a.txt", "b.txt"):
        (ctx / name).write_text(name)
    steps, _, _ = do_build(tmp_path, "FROM base\nWORKDIR /w\nCOPY *.txt rel/\n"
                           "COPY <<EOF /etc/x\n$HOME\nEOF\nADD d /d\n")
    globbed, heredoc, added = steps.copies[-3:]
    assert [(i.name, i.dest) for i in globbed] == [("a.txt", "/w/rel/"), ("b.txt", "/w/rel/")]
    assert heredoc[0].data == b"\n" and heredoc[0].mode == 0o644   # HOME is unset
    assert added[0].host_path is not None and not added[0].extract
    with pytest.raises(BuildError, match="must be a directory and end with a /"):
        do_build(tmp_path, "FROM base\nCOPY *.txt /dest\n")
    with pytest.raises(BuildError, match=r"missing\.txt"):
        do_build(tmp_path, "FROM base\nCOPY missing.txt /dest\n")


def test_label_option_is_a_last_step(tmp_path: Path) -> None:
    steps, image, out = do_build(tmp_path, "FROM base\n", labels={"k": "v w"})
    assert config_of(steps, image).labels == {"k": "v w"}
    assert 'Step 2/2 : LABEL "k"="v w"' in out


def test_onbuild_triggers_run_in_child(tmp_path: Path) -> None:
    steps, parent, _ = do_build(tmp_path, "FROM base\nONBUILD RUN echo child\n")
    steps.images["parent"] = steps.images[parent]
    steps, child, out = do_build(tmp_path, "FROM parent\n", steps)
    assert "# Executing 1 build trigger" in out
    assert steps.runs[-1][0][-1] == "echo child"
    assert not config_of(steps, child).on_build
