"""MkDocs hook: links from a page under docs/ to a file elsewhere in the repository.

The pages are written to be read on the repository host too, so they link to `../experiments/README.md`
and the like. MkDocs cannot follow a link out of `docs/`; this hook checks that the file exists (a
missing one fails the build, as a broken link inside the site does under `--strict`) and, with
`repo_url` set, points the link at the file on the repository host, else names its repository path.
"""

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

LINK = re.compile(r"\[([^\]]+)\]\((\.\./[^)#\s]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown, page, config, files):
    root = Path(config.config_file_path).parent.resolve()
    here = (Path(config.docs_dir) / page.file.src_uri).parent

    def outside(match):
        text, link, anchor = match[1], match[2], match[3] or ""
        target = (here / link).resolve()
        if not target.is_relative_to(root) or not target.exists():
            raise PluginError(f"{page.file.src_uri}: the link {link} names no file of the repository")
        path = target.relative_to(root).as_posix()
        if config.repo_url:
            return f"[{text}]({config.repo_url.rstrip('/')}/blob/main/{path}{anchor})"
        return f"`{path}`" if text.strip("`") == path else f"{text} (`{path}` in the repository)"

    return LINK.sub(outside, markdown)
