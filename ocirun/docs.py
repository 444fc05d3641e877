"""Shell completion and man pages for `ocirun`, generated from cli.py's command table.

    python -m ocirun.docs completion bash > /usr/local/share/bash-completion/completions/ocirun
    python -m ocirun.docs completion zsh > /usr/local/share/zsh/site-functions/_ocirun
    python -m ocirun.docs man /usr/local/share/man/man8     # ocirun.8 and ocirun-COMMAND.8

Everything comes from `SUBCOMMANDS` and `GLOBALS`, so a command or flag added to the table is
completed and documented without a change here (tests/unit/test_docs.py checks every one).
Generated on demand rather than committed: a committed copy would fall behind the table.
Nothing on an engine command's path imports this module.
"""
from __future__ import annotations

import os
import sys

from . import SPEC_VERSION, __version__
from .cli import GLOBALS, SUBCOMMANDS

# What a positional's value is, by its name in the table; any other positional is completed
# as the shell would complete a word (files).
_IDS, _SIGNALS = "id", "signal"


# --------------------------------------------------------------------------- the table, read

def _flags(command: tuple) -> tuple:
    """Every flag of a table entry, argparse-only ones included (users type those too)."""
    _help, flags, argparse_only, _positionals, _fast = command
    return flags + argparse_only


def _takes_value(kind) -> bool:
    return kind != "bool"


def _repeatable(kind) -> bool:
    return kind in ("list", "ints")


def _choices(kind) -> tuple:
    return kind if isinstance(kind, tuple) else ()


def _is_number(kind) -> bool:
    return kind in ("int", "ints")


def _metavar(dest: str, kind) -> str:
    """How the man page names a flag's value: {text|json}, N, or the destination in capitals."""
    if _choices(kind):
        return "{" + "|".join(kind) + "}"
    return "N" if _is_number(kind) else dest.upper()


# --------------------------------------------------------------------------- bash

def bash_completion() -> str:
    """A bash completion script for `ocirun` (`complete -F _ocirun ocirun`), standalone: it needs
    no bash-completion package, and completes container ids from `ocirun [--root DIR] list -q`."""
    flag_cases, value_cases, positional_cases = [], [], []
    for command, entry in [("", GLOBALS)] + list(SUBCOMMANDS.items()):
        flags = _flags(entry)
        names = " ".join(name for names, *_rest in flags for name in names)
        flag_cases.append(f"        {_bash_word(command)}) REPLY={_bash_word(names)} ;;")
        for names, _dest, kind, _default, _text in flags:
            if not _takes_value(kind):
                continue
            value = " ".join(_choices(kind)) or ("number" if _is_number(kind) else "file")
            patterns = "|".join(_bash_word(f"{command} {name}") for name in names)
            value_cases.append(f"        {patterns}) REPLY={_bash_word(value)} ;;")
        kinds = [_IDS if name == _IDS else _SIGNALS if name == _SIGNALS else "word"
                 for name, _arity, _default, _text in entry[3]]
        if kinds:
            rest = "1" if entry[3][-1][1] == "..." else "''"
            positional_cases.append(f"        {_bash_word(command)}) kinds=({' '.join(kinds)}) rest={rest} ;;")
    commands = " ".join(SUBCOMMANDS)
    return _BASH_TEMPLATE.format(version=__version__, commands=_bash_word(commands),
                                 flag_cases="\n".join(flag_cases), value_cases="\n".join(value_cases),
                                 positional_cases="\n".join(positional_cases))


def _bash_word(text: str) -> str:
    """text as one single-quoted shell word ('' for the empty string)."""
    return "'" + text.replace("'", "'\\''") + "'"


_BASH_TEMPLATE = r"""# bash completion for ocirun {version}: `python -m ocirun.docs completion bash` wrote this
# from ocirun's command table; regenerate it rather than edit it.

_ocirun_commands={commands}

# The flags of command $1 ('' for the global ones) in REPLY.
_ocirun_flags() {{
    case "$1" in
{flag_cases}
        *) REPLY='' ;;
    esac
}}

# What follows flag $2 of command $1 in REPLY: "file", "number", the choices, or '' (no value).
_ocirun_value() {{
    case "$1 $2" in
{value_cases}
        *) REPLY='' ;;
    esac
}}

_ocirun() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} flag=${{COMP_WORDS[COMP_CWORD-1]}}
    local i word command='' value_next='' after_root='' npos=0 rest='' kind=none
    local -a root=() kinds=()
    COMPREPLY=()
    # bash splits `--flag=value` at the "=" (COMP_WORDBREAKS): "=" joins a flag to its value.
    [[ $cur == = ]] && cur=''
    [[ $flag == = && COMP_CWORD -gt 1 ]] && flag=${{COMP_WORDS[COMP_CWORD-2]}}
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        if [[ $word == = ]]; then
            continue
        elif [[ -n $value_next ]]; then
            value_next=''
            [[ -n $after_root ]] && root=(--root "$word") && after_root=''
        elif [[ $word == --root=* ]]; then
            root=(--root "${{word#--root=}}")
        elif [[ $word == -* ]]; then
            if [[ $word != *=* ]]; then
                _ocirun_value "$command" "$word"
                [[ -n $REPLY ]] && value_next=1
                [[ -z $command && $word == --root ]] && after_root=1
            fi
        elif [[ -z $command ]]; then
            command=$word
        else
            ((npos++))
        fi
    done

    if [[ -n $value_next ]]; then
        _ocirun_value "$command" "$flag"
        case $REPLY in
            file) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
            number) ;;
            *) COMPREPLY=($(compgen -W "$REPLY" -- "$cur")) ;;
        esac
        return 0
    fi
    if [[ $cur == -* ]]; then
        _ocirun_flags "$command"
        COMPREPLY=($(compgen -W "$REPLY" -- "$cur"))
        return 0
    fi
    if [[ -z $command ]]; then
        COMPREPLY=($(compgen -W "$_ocirun_commands" -- "$cur"))
        return 0
    fi
    case "$command" in
{positional_cases}
    esac
    if ((npos < ${{#kinds[@]}})); then
        kind=${{kinds[npos]}}
    elif [[ -n $rest ]]; then  # the rest of the line is one positional (`exec ID cmd args...`)
        kind=${{kinds[${{#kinds[@]}}-1]}}
    fi
    case $kind in
        id) COMPREPLY=($(compgen -W "$("${{COMP_WORDS[0]}}" "${{root[@]}}" list -q 2>/dev/null)" -- "$cur")) ;;
        signal) COMPREPLY=($(compgen -A signal -- "$cur")) ;;
        word) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
    esac
    return 0
}}

complete -F _ocirun ocirun
"""


# --------------------------------------------------------------------------- zsh

def zsh_completion() -> str:
    """A zsh completion function (`#compdef ocirun`) for a directory on $fpath, as `_ocirun`."""
    functions, command_items, dispatch = [], [], []
    for command, entry in SUBCOMMANDS.items():
        specs = [_zsh_flag_spec(flag) for flag in _flags(entry)] + _zsh_positional_specs(entry[3])
        functions.append(f"_ocirun_cmd_{command}() {{\n    _arguments -s -S \\\n"
                         + " \\\n".join(f"        {spec}" for spec in specs) + "\n}\n")
        command_items.append("        " + _zsh_word(f"{command}:{_zsh_escape(entry[0])}"))
        dispatch.append(f"        ({command}) _ocirun_cmd_{command} ;;")
    global_specs = [_zsh_flag_spec(flag) for flag in _flags(GLOBALS)]
    return _ZSH_TEMPLATE.format(
        version=__version__, functions="\n".join(functions), command_items="\n".join(command_items),
        dispatch="\n".join(dispatch), global_specs=" \\\n".join(f"        {s}" for s in global_specs))


def _zsh_flag_spec(flag: tuple) -> str:
    """One flag as _arguments specs, one per name, each excluding the flag's other names."""
    names, _dest, kind, _default, text = flag
    exclusions = f"({' '.join(names)})" if len(names) > 1 and not _repeatable(kind) else ""
    star = "*" if _repeatable(kind) else ""
    if not _takes_value(kind):
        action = ""
    elif _choices(kind):
        action = f":{_zsh_escape(_metavar(_dest, kind))}:({' '.join(_choices(kind))})"
    elif _is_number(kind):
        action = ":number: "
    else:
        action = f":{_zsh_escape(_dest)}:_files"
    return " ".join(_zsh_word(f"{exclusions}{star}{name}[{_zsh_escape(text)}]{action}") for name in names)


def _zsh_positional_specs(positionals: tuple) -> list[str]:
    specs = []
    for name, arity, _default, _text in positionals:
        action = "_ocirun_ids" if name == _IDS else "_signals" if name == _SIGNALS else "_files"
        if arity == "...":
            specs.append(_zsh_word(f"*::{name}:{action}"))
        else:
            specs.append(_zsh_word(f"{':' if arity == '?' else ''}:{name}:{action}"))
    return specs


def _zsh_escape(text: str) -> str:
    """Help text inside an _arguments spec: brackets and colons are its syntax."""
    for char in "\\[]:":
        text = text.replace(char, "\\" + char)
    return text


def _zsh_word(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


_ZSH_TEMPLATE = r"""#compdef ocirun
# zsh completion for ocirun {version}: `python -m ocirun.docs completion zsh` wrote this from
# ocirun's command table; regenerate it rather than edit it.

# The ids of `ocirun [--root DIR] list -q`, with the ocirun and --root of the command line
# (_ocirun sets them: the command's own _arguments has shifted `words` and reset `opt_args`).
_ocirun_ids() {{
    local -a root ids
    [[ -n $_ocirun_root ]] && root=(--root $_ocirun_root)
    ids=(${{(f)"$(_call_program containers $_ocirun_binary $root list -q 2>/dev/null)"}})
    _describe -t containers container ids
}}

{functions}
_ocirun() {{
    local curcontext=$curcontext state line _ocirun_binary=${{words[1]}} _ocirun_root
    typeset -A opt_args
    _arguments -C -s -S \
{global_specs} \
        '1:command:->command' \
        '*::argument:->argument'
    case $state in
    (command)
        local -a commands=(
{command_items}
        )
        _describe -t commands command commands ;;
    (argument)
        curcontext=${{curcontext%:*:*}}:ocirun-$line[1]:
        _ocirun_root=${{opt_args[--root]}}
        case $line[1] in
{dispatch}
        esac ;;
    esac
}}

_ocirun "$@"
"""


# --------------------------------------------------------------------------- man pages

def man_pages() -> dict[str, str]:
    """ocirun.8 and one page per command (ocirun-create.8, ...), by file name."""
    pages = {"ocirun.8": _main_page()}
    for command, entry in SUBCOMMANDS.items():
        pages[f"ocirun-{command}.8"] = _command_page(command, entry)
    return pages


def write_man_pages(directory: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    written = []
    for name, text in man_pages().items():
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        written.append(path)
    return written


def _main_page() -> str:
    lines = _man_header("ocirun", GLOBALS[0])
    lines += [".SH SYNOPSIS",
              r"\fBocirun\fR [\fIglobal options\fR] \fIcommand\fR [\fIcommand options\fR] [\fIarguments\fR...]",
              ".SH DESCRIPTION",
              f"ocirun runs containers from OCI bundles as the OCI runtime specification {SPEC_VERSION} "
              "describes, with runc's command line: the same commands, flags, exit codes and state "
              "files, so that containerd, podman and dockerd can use it in runc's place. "
              "It runs on Linux, as root or as an ordinary user (rootless).",
              ".SH COMMANDS"]
    for command, entry in SUBCOMMANDS.items():
        lines += [".TP", rf"\fB{_roff(command)}\fR",
                  _roff_text(entry[0]) + rf" (see \fBocirun\-{_roff(command)}\fR(8))."]
    lines += [".SH GLOBAL OPTIONS"] + _man_options(_flags(GLOBALS))
    lines += [".SH ENVIRONMENT",
              ".TP", r"\fBOCIRUN_ROOT\fR",
              r"The state directory when \fB\-\-root\fR is not given.",
              ".TP", r"\fBOCIRUN_STEP_TIMEOUT\fR",
              "Seconds each step of create, start and exec may wait on the container's processes "
              "(default 60).",
              ".SH SEE ALSO",
              ", ".join(rf"\fBocirun\-{_roff(c)}\fR(8)" for c in SUBCOMMANDS) + r", \fBrunc\fR(8)"]
    return "\n".join(lines) + "\n"


def _command_page(command: str, entry: tuple) -> str:
    helptext, _flags_, _argparse_only, positionals, _fast = entry
    lines = _man_header(f"ocirun-{command}", helptext)
    usage = " ".join(_man_positional(name, arity) for name, arity, _d, _t in positionals)
    lines += [".SH SYNOPSIS",
              rf"\fBocirun\fR [\fIglobal options\fR] \fB{_roff(command)}\fR [\fIoptions\fR] {usage}".rstrip(),
              ".SH DESCRIPTION", _roff_text(helptext[:1].upper() + helptext[1:]) + "."]
    if positionals:
        lines.append(".SH ARGUMENTS")
        for name, _arity, _default, text in positionals:
            lines += [".TP", rf"\fI{_roff(name)}\fR", _roff_text(text)]
    options = _flags(entry)
    if options:
        lines += [".SH OPTIONS"] + _man_options(options)
    lines += [".SH SEE ALSO", r"\fBocirun\fR(8)"]
    return "\n".join(lines) + "\n"


def _man_header(name: str, summary: str) -> list[str]:
    return ['.\\" Generated by `python -m ocirun.docs man` from ocirun\'s command table.',
            f'.TH {_roff(name.upper())} 8 "" "ocirun {__version__}" "System Administration"',
            ".SH NAME", rf"{_roff(name)} \- {_roff_text(summary)}"]


def _man_options(flags: tuple) -> list[str]:
    lines = []
    for names, dest, kind, _default, text in flags:
        value = rf" \fI{_roff(_metavar(dest, kind))}\fR" if _takes_value(kind) else ""
        heading = ", ".join(rf"\fB{_roff(name)}\fR" for name in names) + value
        more = " (repeatable)" if _repeatable(kind) and "repeatable" not in text else ""
        lines += [".TP", heading, _roff_text(text + more)]
    return lines


def _man_positional(name: str, arity: str) -> str:
    if arity == "1":
        return rf"\fI{_roff(name)}\fR"
    if arity == "?":
        return rf"[\fI{_roff(name)}\fR]"
    return rf"[\fI{_roff(name)}\fR...]"


def _roff(text: str) -> str:
    """A word for roff: backslashes escaped, hyphens as minus signs (so that a flag copied from
    the rendered page is the flag)."""
    return text.replace("\\", r"\e").replace("-", r"\-")


def _roff_text(text: str) -> str:
    """A line of running text: backslashes escaped, and a leading dot or quote kept literal."""
    text = text.replace("\\", r"\e")
    return "\\&" + text if text[:1] in (".", "'") else text


# --------------------------------------------------------------------------- command line

_USAGE = "usage: python -m ocirun.docs completion bash|zsh | man DIRECTORY"


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "completion" and argv[1] in ("bash", "zsh"):
        sys.stdout.write(bash_completion() if argv[1] == "bash" else zsh_completion())
        return 0
    if len(argv) == 2 and argv[0] == "man":
        for path in write_man_pages(argv[1]):
            print(path)
        return 0
    print(_USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
