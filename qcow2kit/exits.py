"""The exit status of every qcow2kit command, and the words that document it."""
from __future__ import annotations

OK = 0
BAD_IMAGE = 1  # the image or a file of its chain cannot be read, is refused or is in use
USAGE = 2  # click's status for a bad command line
OUTPUT_FAILED = 4  # the output is refused (an input, locked) or a write to it failed
INTERRUPTED = 130  # SIGINT, as a shell reports a command killed by it (128 + 2)
READER_GONE = 141  # stdout's reader went away (EPIPE), as a shell reports cat's SIGPIPE
DIFF_DIFFERENT, DIFF_TROUBLE = 1, 2  # diff's own, as diff(1) has them

HELP = (f"Exit status: {OK} success; {BAD_IMAGE} the image or a file of its chain cannot "
        f"be read or is refused (one line on stderr names the file, structure and "
        f"offset), or -f names another format than qcow2; {USAGE} a usage error; {OUTPUT_FAILED} the output is refused or "
        f"cannot be written (an output this run created is removed); {INTERRUPTED} "
        f"interrupted; {READER_GONE} the reader of stdout went away (quietly, as cat). "
        f"check has qemu-img check's own statuses (see check --help), diff diff(1)'s: "
        f"{OK} no difference, {DIFF_DIFFERENT} differences, {DIFF_TROUBLE} trouble.")
