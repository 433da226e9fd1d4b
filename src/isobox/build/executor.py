"""Run a parsed Dockerfile: stages, the steps of each, the cache, tags.

Docker's classic builder is the model: every step makes an image (the
parent of the next), printed as ``Step i/n : ...`` and `` ---> <id>``;
a step whose cache key was seen and whose image is still there is reused
(`` ---> Using cache``). Stages the target does not need are skipped
(as BuildKit does). Nothing is tagged unless every step succeeded."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from isobox.build import config_ops, context, remote
from isobox.build.cache import BuildCache, cache_key
from isobox.build.lex import Lexer
from isobox.build.parser import (
    Dockerfile,
    DockerfileError,
    Instruction,
    parse,
    parse_instruction_line,
)
from isobox.build.steps import BaseImage, CopyItem, RunOptions, StepRunner
from isobox.errors import InvalidArgument, IsoboxError, NotFound
from isobox.images.builder import now_rfc3339
from isobox.oci import image_spec as spec

__all__ = ["BuildError", "BuildOptions", "BuildResult", "build"]

PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
              "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
_HEREDOC_WORD = re.compile(r"<<-?(['\"]?)([a-zA-Z_][a-zA-Z0-9_]*)\1$")
_CONFIG_ONLY = ("ENV", "LABEL", "CMD", "ENTRYPOINT", "EXPOSE", "VOLUME", "USER",
                "STOPSIGNAL", "HEALTHCHECK", "SHELL", "ONBUILD", "MAINTAINER")


class BuildError(IsoboxError):
    """A step failed; ``exit_code`` is a failing RUN's (Docker's CLI exits with it)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class BuildOptions:
    dockerfile: str                          #: its text
    context_dir: str                         #: the filtered context, on the host
    tags: Sequence[str] = ()
    build_args: Mapping[str, str | None] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str = "default"
    isolation: str = ""
    platform: str | None = None


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tags: tuple[str, ...]


@dataclass
class _Stage:
    index: int
    name: str | None
    from_inst: Instruction
    body: list[Instruction]


@dataclass
class _State:
    image: BaseImage
    config: spec.ContainerConfig
    history: list[spec.History]
    args: dict[str, str] = field(default_factory=dict)
    cmd_set: bool = False


def split_stages(df: Dockerfile) -> tuple[list[Instruction], list[_Stage]]:
    meta: list[Instruction] = []
    stages: list[_Stage] = []
    for inst in df.instructions:
        if inst.cmd == "FROM":
            name = inst.args[2].lower() if len(inst.args) == 3 else None
            if name is not None and any(s.name == name for s in stages):
                raise DockerfileError(f"duplicate stage name {name!r}", inst.line)
            stages.append(_Stage(len(stages), name, inst, []))
        elif not stages:
            if inst.cmd != "ARG":
                raise DockerfileError("no build stage in current context", inst.line)
            meta.append(inst)
        else:
            stages[-1].body.append(inst)
    if not stages:
        raise DockerfileError("no build stage in current context")
    return meta, stages


class _Builder:
    def __init__(self, options: BuildOptions, runner: StepRunner, cache: BuildCache,
                 log: Callable[[str], None]) -> None:
        self.options = options
        self.runner = runner
        self.cache = cache
        self.log = log
        self.df = parse(options.dockerfile)
        self.lexer = Lexer(self.df.escape)
        self.meta, self.stages = split_stages(self.df)
        self.meta_args: dict[str, str] = {}
        self.used_args: set[str] = set()
        self.results: dict[int, BaseImage] = {}
        self.step = 0
        self.total = 0

    # -- planning ----------------------------------------------------------------

    def _stage_by_ref(self, ref: str, before: int) -> _Stage | None:
        lowered = ref.lower()
        for stage in self.stages[:before]:
            if stage.name == lowered:
                return stage
        if ref.isdigit() and int(ref) < before:
            return self.stages[int(ref)]
        return None

    def _needed(self, target: _Stage) -> list[_Stage]:
        needed: set[int] = set()

        def visit(stage: _Stage) -> None:
            if stage.index in needed:
                return
            needed.add(stage.index)
            base = self._expand_meta(stage.from_inst.args[0], stage.from_inst.line)
            dep = self._stage_by_ref(base, stage.index)
            if dep is not None:
                visit(dep)
            for inst in stage.body:
                src = inst.flag("from") if inst.cmd in ("COPY", "ADD") else None
                if src:
                    dep = self._stage_by_ref(self._expand_meta(src, inst.line), stage.index)
                    if dep is not None:
                        visit(dep)

        visit(target)
        return [s for s in self.stages if s.index in needed]

    def _expand_meta(self, word: str, line: int) -> str:
        try:
            return self.lexer.word(word, self.meta_args)
        except DockerfileError:
            raise
        except InvalidArgument as exc:
            raise DockerfileError(str(exc), line) from None

    # -- the build ----------------------------------------------------------------

    def run(self) -> BuildResult:
        for inst in self.meta:
            for name, default in self._arg_pairs(inst):
                self.used_args.add(name)
                value = self.options.build_args.get(name)
                if name in self.options.build_args and value is not None:
                    self.meta_args[name] = value
                elif default is not None:
                    self.meta_args[name] = self._expand_meta(default, inst.line)
        target = self.stages[-1]
        if self.options.target:
            found = [s for s in self.stages if s.name == self.options.target.lower()]
            if not found:
                raise InvalidArgument(f"failed to reach build target {self.options.target} "
                                      "in Dockerfile")
            target = found[0]
        if self.options.labels:
            words = " ".join(f'"{_quote(k)}"="{_quote(v)}"'
                             for k, v in sorted(self.options.labels.items()))
            label = parse_instruction_line(f"LABEL {words}", 0, 0, self.df.escape)
            target.body.append(label)
        plan = self._needed(target)
        self.total = len(self.meta) + sum(1 + len(s.body) for s in plan)
        for inst in self.meta:
            self._announce(inst)
        image: BaseImage | None = None
        for stage in plan:
            image = self._run_stage(stage)
            self.results[stage.index] = image
        assert image is not None
        unused = sorted(k for k in self.options.build_args
                        if k not in self.used_args and k not in PROXY_ARGS)
        if unused:
            self.log(f"[Warning] One or more build-args [{' '.join(unused)}] were not "
                     "consumed\n")
        self.runner.tag(image.id, self.options.tags)
        return BuildResult(image.id, tuple(self.options.tags))

    def _announce(self, inst: Instruction) -> None:
        self.step += 1
        self.log(f"Step {self.step}/{self.total} : {inst.original}\n")

    def _run_stage(self, stage: _Stage) -> BaseImage:
        inst = stage.from_inst
        self._announce(inst)
        base_name = self._expand_meta(inst.args[0], inst.line)
        platform = inst.flag("platform")
        dep = self._stage_by_ref(base_name, stage.index)
        if dep is not None:
            base = self.results[dep.index]
        elif base_name.lower() == "scratch":
            base = self._scratch()
        else:
            try:
                base = self.runner.base(base_name,
                                        self._expand_meta(platform, inst.line) if platform
                                        else self.options.platform)
            except NotFound as exc:
                raise BuildError(f"pull access denied for {base_name}: {exc}") from None
        self.log(f" ---> {_short(base.id)}\n")
        config = (base.config.config or spec.ContainerConfig())
        state = _State(base, config, list(base.config.history or []))
        triggers = list(config.on_build or [])
        if triggers:
            state.config = msgspec.structs.replace(config, on_build=None)
            self.log(f"# Executing {len(triggers)} build trigger"
                     f"{'s' if len(triggers) > 1 else ''}\n")
            for text in triggers:
                trigger = parse_instruction_line(text, inst.line, inst.line, self.df.escape)
                self._dispatch(trigger, state, stage)
        for body_inst in stage.body:
            self._announce(body_inst)
            self._dispatch(body_inst, state, stage)
            self.log(f" ---> {_short(state.image.id)}\n")
        return state.image

    def _scratch(self) -> BaseImage:
        config = spec.ImageConfig(architecture=_host_arch(), os="linux",
                                  rootfs=spec.RootFS(), config=spec.ContainerConfig())
        return self.runner.commit([], config, [])

    def _scope(self, state: _State) -> dict[str, str]:
        return {**state.args, **config_ops.env_dict(state.config)}

    def _expand(self, word: str, state: _State, line: int) -> str:
        try:
            return self.lexer.word(word, self._scope(state))
        except DockerfileError:
            raise
        except InvalidArgument as exc:
            raise DockerfileError(str(exc), line) from None

    # -- steps -------------------------------------------------------------------------

    def _dispatch(self, inst: Instruction, state: _State, stage: _Stage) -> None:
        if inst.cmd == "FROM":
            raise DockerfileError("FROM is not allowed here", inst.line)
        if inst.cmd == "ARG":
            self._arg(inst, state)
            self._metadata(inst, state, f"ARG {inst.rest}")
        elif inst.cmd in _CONFIG_ONLY:
            new = config_ops.apply_config(inst, state.config, self.lexer, self._scope(state),
                                          cmd_set=state.cmd_set)
            if inst.cmd == "CMD":
                state.cmd_set = True
            state.config = new
            self._metadata(inst, state, inst.original, author=inst.rest if inst.cmd == "MAINTAINER"
                           else None)
        elif inst.cmd == "WORKDIR":
            state.config = config_ops.apply_config(inst, state.config, self.lexer,
                                                   self._scope(state), cmd_set=state.cmd_set)
            workdir = state.config.working_dir or "/"
            self._fs_step(state, f"WORKDIR {workdir}", [],
                          lambda: self.runner.copy(state.image, [], chown=None,
                                                   workdir=workdir, mkdir=[workdir]),
                          f"/bin/sh -c #(nop) WORKDIR {workdir}")
        elif inst.cmd == "RUN":
            self._run(inst, state)
        elif inst.cmd in ("COPY", "ADD"):
            self._copy(inst, state, stage)
        else:
            raise DockerfileError(f"unknown instruction: {inst.cmd}", inst.line)

    def _arg_pairs(self, inst: Instruction) -> list[tuple[str, str | None]]:
        pairs: list[tuple[str, str | None]] = []
        for word in inst.args:
            name, eq, default = word.partition("=")
            if not name:
                raise DockerfileError("ARG names can not be blank", inst.line)
            pairs.append((name, default if eq else None))
        return pairs

    def _arg(self, inst: Instruction, state: _State) -> None:
        for name, default in self._arg_pairs(inst):
            self.used_args.add(name)
            given = self.options.build_args.get(name)
            if name in self.options.build_args and given is not None:
                state.args[name] = given
            elif default is not None:
                state.args[name] = self._expand(default, state, inst.line)
            elif name in self.meta_args:
                state.args[name] = self.meta_args[name]
            else:
                state.args.pop(name, None)

    def _commit_config(self, state: _State, history: spec.History,
                       layer: object | None = None) -> BaseImage:
        layers = list(state.image.layers)
        if layer is not None:
            layers.append(layer)  # type: ignore[arg-type]
        created = history.created
        config = msgspec.structs.replace(state.image.config, created=created,
                                         config=state.config)
        state.history.append(history)
        return self.runner.commit(layers, config, state.history)

    def _metadata(self, inst: Instruction, state: _State, text: str,
                  author: str | None = None) -> None:
        shown = f"/bin/sh -c #(nop) {text}"
        key = cache_key(state.image.id, shown, [msgspec.json.encode(state.config).decode()])
        if self._cached(key, state):
            return
        history = spec.History(created=now_rfc3339(), created_by=shown, author=author,
                               empty_layer=True)
        image = self._commit_config(state, history)
        self._advance(state, image, key)

    def _cached(self, key: str, state: _State) -> bool:
        if self.options.no_cache:
            return False
        image_id = self.cache.get(key)
        image = self.runner.exists(image_id) if image_id else None
        if image is None:
            return False
        self.log(" ---> Using cache\n")
        state.image = image
        state.history = list(image.config.history or [])
        state.config = image.config.config or spec.ContainerConfig()
        return True

    def _advance(self, state: _State, image: BaseImage, key: str) -> None:
        state.image = image
        state.history = list(image.config.history or [])
        self.cache.put(key, image.id)

    def _fs_step(self, state: _State, text: str, extra: list[str],
                 make: Callable[[], object | None], created_by: str) -> None:
        key = cache_key(state.image.id, text,
                        [*extra, msgspec.json.encode(state.config).decode()])
        if self._cached(key, state):
            return
        layer = make()
        history = spec.History(created=now_rfc3339(), created_by=created_by,
                               empty_layer=True if layer is None else None)
        image = self._commit_config(state, history, layer)
        self._advance(state, image, key)

    def _run(self, inst: Instruction, state: _State) -> None:
        argv = self._run_argv(inst, state)
        env = dict(config_ops.env_dict(state.config))
        build_env = {k: v for k, v in state.args.items() if k not in env}
        for proxy in PROXY_ARGS:
            value = self.options.build_args.get(proxy)
            if value is not None and proxy not in env:
                build_env[proxy] = value
        env.update(build_env)
        shown_args = {k: v for k, v in sorted(build_env.items()) if k not in PROXY_ARGS}
        prefix = (f"|{len(shown_args)} " + " ".join(f"{k}={v}" for k, v in shown_args.items())
                  + " ") if shown_args else ""
        created_by = prefix + " ".join(argv)
        network = inst.flag("network") or self.options.network
        options = RunOptions(env=[f"{k}={v}" for k, v in env.items()],
                             workdir=state.config.working_dir or "/",
                             user=state.config.user or "", network=network,
                             isolation=self.options.isolation)

        def make() -> object | None:
            code, layer = self.runner.run(state.image, argv, options,
                                          lambda b: self.log(b.decode("utf-8", "replace")))
            if code != 0:
                shown = " ".join(argv) if not inst.json else str(list(argv)).replace("'", '"')
                raise BuildError(f"The command '{shown}' returned a non-zero code: {code}",
                                 code)
            return layer

        self._fs_step(state, "RUN " + created_by, [network], make, created_by)

    def _run_argv(self, inst: Instruction, state: _State) -> list[str]:
        if inst.json:
            return list(inst.args)
        shell = list(state.config.shell or config_ops.DEFAULT_SHELL)
        if inst.heredocs:
            only = _HEREDOC_WORD.fullmatch(inst.rest.strip())
            if only is not None and len(inst.heredocs) == 1:
                return [*shell, inst.heredocs[0].content]
            script = inst.rest + "\n" + "".join(
                f"{h.content}{h.name}\n" for h in inst.heredocs)
            return [*shell, script]
        return [*shell, inst.rest]

    def _copy(self, inst: Instruction, state: _State, stage: _Stage) -> None:
        words = list(inst.args)
        heredocs = {h.name: h for h in inst.heredocs}
        dest_raw = words[-1]
        dest = self._expand(dest_raw, state, inst.line)
        if not dest.startswith("/"):
            workdir = state.config.working_dir or "/"
            keep_slash = dest.endswith("/") or dest in (".", "")
            dest = posixpath.join(workdir, dest)
            dest = posixpath.normpath(dest) + ("/" if keep_slash else "")
            dest = dest.replace("//", "/")
        chown = inst.flag("chown")
        chown = self._expand(chown, state, inst.line) if chown else None
        chmod_text = inst.flag("chmod")
        chmod = None
        if chmod_text:
            try:
                chmod = int(self._expand(chmod_text, state, inst.line), 8)
            except ValueError:
                raise DockerfileError(f"invalid chmod parameter {chmod_text!r}",
                                      inst.line) from None
        from_ref = inst.flag("from")
        if from_ref is not None and inst.cmd == "ADD":
            raise DockerfileError("ADD does not support --from", inst.line)
        source_image: BaseImage | None = None
        if from_ref:
            ref = self._expand(from_ref, state, inst.line)
            dep = self._stage_by_ref(ref, stage.index)
            if dep is not None:
                source_image = self.results[dep.index]
            else:
                try:
                    source_image = self.runner.base(ref, None)
                except NotFound as exc:
                    raise BuildError(f"COPY --from={ref}: {exc}") from None
        items: list[CopyItem] = []
        sums: list[str] = []
        for raw in words[:-1]:
            match = _HEREDOC_WORD.fullmatch(raw)
            if match is not None and match[2] in heredocs:
                doc = heredocs[match[2]]
                data = (self._expand(doc.content, state, inst.line) if doc.expand
                        else doc.content)
                items.append(CopyItem(dest=dest, name=doc.name, data=data.encode(),
                                      mode=chmod if chmod is not None else 0o644))
                sums.append("heredoc:" + cache_key("", data))
                continue
            src = self._expand(raw, state, inst.line)
            if source_image is not None:
                path = posixpath.normpath("/" + src.lstrip("/"))
                items.append(CopyItem(dest=dest, name=posixpath.basename(path) or "/",
                                      image=source_image.id, image_path=path, mode=chmod))
                sums.append(f"{source_image.id}:{path}")
                continue
            if inst.cmd == "ADD" and remote.is_url(src):
                fetched = remote.fetch(src, os.path.join(
                    os.path.dirname(self.options.context_dir), "downloads"))
                if not fetched.name and dest.endswith("/"):
                    raise BuildError(f"ADD {src}: cannot determine a file name from the URL: "
                                     "give the destination file's name")
                # Never extracted, even an archive: Docker's rule for URLs.
                items.append(CopyItem(dest=dest, name=fetched.name or posixpath.basename(dest),
                                      host_path=fetched.path, mode=chmod))
                sums.append(f"{src}:{context.checksum(fetched.path)}")
                continue
            try:
                rels = context.resolve_sources(self.options.context_dir, src)
            except NotFound as exc:
                raise BuildError(f"{inst.cmd} failed: file not found in build context or "
                                 f"excluded by .dockerignore: stat {src}: {exc}") from None
            for rel in rels:
                host = context.host_path(self.options.context_dir, rel)
                extract = inst.cmd == "ADD" and context.is_archive(host)
                items.append(CopyItem(dest=dest, name=posixpath.basename(rel) or ".",
                                      host_path=host, extract=extract, mode=chmod))
                sums.append(f"{rel}:{context.checksum(host)}")
        if len(items) > 1 and not dest.endswith("/"):
            raise BuildError(f"When using {inst.cmd} with more than one source file, the "
                             "destination must be a directory and end with a /")
        text = f"{inst.cmd} " + " ".join(
            f"--{k}={v}" for k, v in inst.flags if k in ("chown", "chmod", "from")) + \
            " ".join(words)
        kind = "multi" if len(items) > 1 else (
            "dir" if items and items[0].host_path and os.path.isdir(items[0].host_path)
            else "file")
        created_by = (f"/bin/sh -c #(nop) {inst.cmd} {kind}:"
                      f"{cache_key('', '', sums)} in {dest} ")
        self._fs_step(state, text, [*sums, chown or ""],
                      lambda: self.runner.copy(state.image, items, chown=chown,
                                               workdir=state.config.working_dir or "/"),
                      created_by)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _host_arch() -> str:
    import platform

    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def build(options: BuildOptions, runner: StepRunner, cache: BuildCache,
          log: Callable[[str], None],
          on_built: Callable[[BuildResult], None] | None = None) -> BuildResult:
    """Build; ``log`` receives Docker's step lines and each RUN's output;
    ``on_built`` the result, before the ``Successfully built`` line (the
    API's ``aux`` message comes there, as dockerd sends it)."""
    result = _Builder(options, runner, cache, log).run()
    if on_built is not None:
        on_built(result)
    log(f"Successfully built {_short(result.image_id)}\n")
    for tag in result.tags:
        log(f"Successfully tagged {_familiar(tag)}\n")
    return result


def _familiar(tag: str) -> str:
    from isobox.oci import reference

    return reference.parse(tag).familiar()
