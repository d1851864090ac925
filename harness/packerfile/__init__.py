"""The Packerfile language: GGUFPackerfile (or a gguf-packer Dockerfile) to typed records.

``parse``/``load`` read and check a file; ``plan`` expands variables for a target and resolves
its stages; ``lint`` reports every problem of several files; ``load_ignore`` reads
``.ggufpackerignore``. Nothing here builds anything.
"""

from harness.errors import PackerfileError, PackerfileErrors, PackerfileWarning
from harness.packerfile._files import find_packerfile, lint, load
from harness.packerfile._ignore import IgnoreMatcher, load_ignore, parse_ignore
from harness.packerfile._instructions import INSTRUCTIONS
from harness.packerfile._parse import is_packerfile_name, parse
from harness.packerfile._plan import AUTOMATIC_ARGS, plan
from harness.packerfile._records import (
    Add,
    Arg,
    BuildPlan,
    Cat,
    Cmd,
    Convert,
    Copy,
    Directive,
    From,
    Heredoc,
    Instruction,
    Label,
    Packerfile,
    Quantize,
    RefKind,
    Stage,
    StageRef,
)
from harness.packerfile._roles import FileArg, Role, RoleKind, cmd_file_args, cmd_roles
from harness.packerfile._sources import (
    OCI_LAYOUT_SCHEME,
    is_git_source,
    is_http_source,
    is_image_reference,
)
from harness.packerfile._types import (
    CONVERT_TYPES,
    DEFAULT_CONVERT_TYPE,
    DEFAULT_QUANTIZE_TYPE,
    GGML_TYPES,
    QUANTIZE_TYPES,
    needs_imatrix,
)

__all__ = [
    "AUTOMATIC_ARGS",
    "CONVERT_TYPES",
    "DEFAULT_CONVERT_TYPE",
    "DEFAULT_QUANTIZE_TYPE",
    "GGML_TYPES",
    "INSTRUCTIONS",
    "OCI_LAYOUT_SCHEME",
    "QUANTIZE_TYPES",
    "Add",
    "Arg",
    "BuildPlan",
    "Cat",
    "Cmd",
    "Convert",
    "Copy",
    "Directive",
    "FileArg",
    "From",
    "Heredoc",
    "IgnoreMatcher",
    "Instruction",
    "Label",
    "Packerfile",
    "PackerfileError",
    "PackerfileErrors",
    "PackerfileWarning",
    "Quantize",
    "RefKind",
    "Role",
    "RoleKind",
    "Stage",
    "StageRef",
    "cmd_file_args",
    "cmd_roles",
    "find_packerfile",
    "is_git_source",
    "is_http_source",
    "is_image_reference",
    "is_packerfile_name",
    "lint",
    "load",
    "load_ignore",
    "needs_imatrix",
    "parse",
    "parse_ignore",
    "plan",
]
