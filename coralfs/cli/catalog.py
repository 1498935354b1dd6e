"""What `coralfs --help` shows, as data: the root usage, help and options, and every
command's task panel and one-line help in listing order. `coralfs --help` draws it
(coralfs/cli/root_help.py) without importing typer or a command module; the commands
themselves stay the source, and tests/cli/test_root_help.py fails, naming the row to
change, when a command's name, panel or help no longer matches this table."""

from __future__ import annotations

# `coralfs --help` lists commands by task, in this order (typer's rich help panels; the
# commands' own rich_help_panel is set from this, coralfs.cli.main.assign_panels).
PANELS: dict[str, tuple[str, ...]] = {
    "Start": ("init", "import", "import-pytorch", "clone", "config", "alias", "completions"),
    "Record": ("commit", "save", "status", "stash", "watch", "preview"),
    "Inspect": ("log", "show", "diff", "changelog", "lineage", "ancestry", "provenance", "stats", "browse", "ui"),
    "Branches and tags": ("branch", "tag", "checkout", "merge", "export"),
    "Mount": ("mount", "umount", "mounts"),
    "Experiments and releases": ("experiment", "release", "releases", "ci"),
    "Share": ("remote", "push", "fetch", "pull", "publish"),
    "Maintain": ("gc", "fsck", "optimize", "cache"),
}
PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}

USAGE = "Usage: coralfs [OPTIONS] COMMAND [ARGS]..."
HELP = "Version control for neural-network weights, used through the file system."

# The root options (coralfs/cli/app.py) as typer shows them: long form, short form, type, help.
OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("--repo", "-R", "<str>", "Repository path (else CORALFS_REPO, else the current directory or a parent)"),
    ("--verbose", "-v", "<bool>", "Debug logs and tracebacks"),
    ("--config", "-c", "KEY=VALUE", "A config value for this command only (above every other scope)"),
    ("--help", "-h", "<bool>", "Show this message and exit."),
)

# Every command `coralfs --help` lists (hidden ones are not), in typer's order: name, panel,
# the first paragraph of its help on one line (coralfs.cli.main.one_line).
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ('init', 'Start',
     'Create an empty repository (private to you unless --shared).'),
    ('import', 'Start',
     'Import a checkpoint (file or directory) with an automatic commit.'),
    ('clone', 'Start',
     "Create a repository from a remote (origin), checking out the remote's HEAD branch."),
    ('alias', 'Start',
     'List, define or remove command aliases (stored in the repo config).'),
    ('completions', 'Start',
     'Print a shell completion script (completes commands, options, refs and paths).'),
    ('commit', 'Record',
     "Record checkpoint files or directories (or a writable mount's changes) as a new commit."),
    ('save', 'Record',
     'Commit the current checkpoint directory or writable mount with an automatic message (a '
     'built-in alias; `coralfs alias save "..."` redefines it).'),
    ('status', 'Record',
     'Where HEAD is, what the head commit holds, and staged changes of writable mounts.'),
    ('watch', 'Record',
     'Commit each settled checkpoint a trainer writes into DIRECTORY (inotify).'),
    ('preview', 'Record',
     'What checking out REF would change, file by file and tensor by tensor (changes nothing).'),
    ('log', 'Inspect',
     'Show commit history.'),
    ('show', 'Inspect',
     "Show a commit and its files, or one file's tensors (REF:PATH)."),
    ('diff', 'Inspect',
     'Per-file and per-tensor changes between two revisions.'),
    ('changelog', 'Inspect',
     'What changed between releases: commits, metrics before/after, changes per layer.'),
    ('lineage', 'Inspect',
     'The graph of commits, branches, tags, merges and derived-from edges (byte-stable).'),
    ('ancestry', 'Inspect',
     'Every commit that changed a file or one weight, newest first: how much, how it is stored'
     ' (keyframe, delta of the same path, similarity match), merges and their strategy.'),
    ('provenance', 'Inspect',
     "How a commit's weights were made (source model, dataset and config hashes, command, "
     'framework versions) and the training lineage its derived-from records trace.'),
    ('stats', 'Inspect',
     'Logical vs stored bytes, ratio, objects by codec.'),
    ('browse', 'Inspect',
     'Browse refs, commits, files and tensors (statistics, histograms), compare commits '
     "(per-layer bars, heatmaps), search history, stash/pop a writable mount's changes."),
    ('ui', 'Inspect',
     'The same as `coralfs browse`.'),
    ('branch', 'Branches and tags',
     'List, create or delete branches.'),
    ('tag', 'Branches and tags',
     'List, create (annotated) or delete tags. Release tags (made by `coralfs release`) are '
     'never moved or deleted.'),
    ('checkout', 'Branches and tags',
     'Move HEAD to a branch (attached) or any revision (detached).'),
    ('merge', 'Branches and tags',
     'Three-way, per-tensor merge of REF into the current branch.'),
    ('export', 'Branches and tags',
     'Write the files of a revision (links as links, empty directories too), byte-identical to'
     ' what was committed.'),
    ('mount', 'Mount',
     'Mount a commit, branch or tag (MNT@REF) read-only, the whole repository (MNT), or a '
     "branch writable (MNT --write [--branch B]) so trainers can save into it. A remote's "
     'commit mounts read-only too (URL MNT@REF, or --remote NAME REPO MNT@REF), fetching only '
     'the chunks that reads touch into a local cache.'),
    ('umount', 'Mount',
     'Unmount a coralfs mount (also one whose daemon was killed). A writable mount with '
     'uncommitted changes needs --commit -m MSG or --keep.'),
    ('mounts', 'Mount',
     'List active coralfs mounts.'),
    ('release', 'Experiments and releases',
     'Tag a commit as the next semantic version (an annotated tag that is never moved).'),
    ('releases', 'Experiments and releases',
     'List release tags (vX.Y.Z...) in semantic-version order, lowest first.'),
    ('push', 'Share',
     'Send branches (and tags) with the objects the remote lacks; refs move by '
     'compare-and-swap.'),
    ('fetch', 'Share',
     "Bring the remote's branches (as REMOTE/BRANCH) and tags here, with their objects, "
     'verified.'),
    ('pull', 'Share',
     'fetch, then fast-forward the branch to REMOTE/BRANCH (diverged: merge it yourself).'),
    ('gc', 'Maintain',
     'Remove objects no ref, reflog entry or staging area reaches.'),
    ('fsck', 'Maintain',
     'Re-verify every object (SHA-256) and every reference; non-zero exit on damage.'),
    ('optimize', 'Maintain',
     "Storage recommendations measured on the repository's own chunks, and applying them."),
    ('config', 'Start',
     "Read and change the repository config (config.toml), or with --user the user's own "
     '($XDG_CONFIG_HOME/coralfs/config.toml).'),
    ('stash', 'Record',
     "`coralfs stash` sets a branch's staged changes aside (the writable mount then shows the "
     'branch head); `stash pop` brings them back; `stash list` lists them.'),
    ('experiment', 'Experiments and releases',
     'Experiments: a branch exp/NAME for the checkpoints plus a record of params and metrics '
     'kept in the repository (pushed and cloned with it).'),
    ('ci', 'Experiments and releases',
     'Continuous integration: validate a checkpoint against a schema, benchmark it against a '
     'base, write a GitHub Actions workflow, pre-commit hooks.'),
    ('remote', 'Share',
     'Remotes: object stores (s3://, gs://, az://) or directories (file:///) that repositories'
     ' push to and fetch from.'),
    ('publish', 'Share',
     'Publish a commit to a model registry (Hugging Face Hub, MLflow, SageMaker); which commit'
     ' became which registry version is kept in the repository.'),
    ('cache', 'Maintain',
     'The materialization cache of mounts: decoded chunks kept on local disk, reused by every '
     'later mount (REPO/cache/materialized unless --cache-dir).'),
)
