"""Writing animations to .gif, .html or .mp4."""
import os
import re
import shutil

__all__ = ["save_animation"]

_FORMATS = (".gif", ".html", ".mp4")

# matplotlib's HTML player draws its buttons with Font Awesome icons from a CDN (blank offline);
# the written file gets plain glyphs instead, as HTML entities (the file declares no charset).
_GLYPHS = {
    "fa-minus": "&#8722;",
    "fa-plus": "+",
    "fa-fast-backward": "|&#9664;&#9664;",
    "fa-step-backward": "&#9664;|",
    "fa-play fa-flip-horizontal": "&#9664;",
    "fa-pause": "&#8214;",
    "fa-play": "&#9654;",
    "fa-step-forward": "|&#9654;",
    "fa-fast-forward": "&#9654;&#9654;|",
}
_ICON = re.compile(r'<i class="fa ([a-z -]+)"></i>')
_CDN_LINK = re.compile(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">\s*')
_STYLE = ('<style>.anim-buttons .anim-icon {font-family: "DejaVu Sans", "Segoe UI Symbol", sans-serif; '
          'display: inline-block; min-width: 1.6em; font-style: normal;}</style>\n')


def _self_contained_html(path):
    """Replace the player's CDN icon font by inline glyphs; fail loudly if any other URL remains."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = _CDN_LINK.sub(_STYLE, text, count=1)

    def glyph(match):
        return f'<span class="anim-icon" aria-hidden="true">{_GLYPHS.get(match.group(1).strip(), "?")}</span>'

    text = _ICON.sub(glyph, text)
    remaining = re.findall(r"https?://[^\s\"'<>]+", text)
    if remaining:  # pragma: no cover - a matplotlib template change; better an error than a blank player
        raise RuntimeError(f"the HTML player written by matplotlib still loads {remaining[0]}")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def save_animation(ani, path, fps=2, dpi=None):
    """Save an animation; the format follows the file extension.

    ``.gif`` is written through Pillow (no external program needed), ``.html``
    as a self-contained JavaScript player (matplotlib's jshtml, with its
    buttons drawn as plain glyphs instead of an icon font from the internet,
    so it works offline) and ``.mp4`` through ffmpeg, which must be on
    ``PATH``. Every frame of the animation is
    written once. The figure is left open.

    Parameters
    ----------
    ani : matplotlib.animation.Animation
        E.g. from :func:`animate_histogram` or :func:`animate_bipartite`.
    path : str or os.PathLike
        Target file ending in ``.gif``, ``.html`` or ``.mp4``; its directory
        must exist.
    fps : float
        Frames per second of the saved file.
    dpi : float, optional
        Resolution; the figure's own by default.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    TypeError
        If ``ani`` is not a matplotlib animation.
    ValueError
        If the extension is not one of ``.gif``, ``.html``, ``.mp4``.
    RuntimeError
        For ``.mp4`` when ffmpeg is not installed.

    Examples
    --------
    >>> import os, tempfile, dgl_capsules as dc
    >>> p = dc.data.planted_clusters(n_in=6, n_out=2)
    >>> r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=2, return_trace=True)
    >>> ani = dc.viz.animate_histogram(r.trace)
    >>> path = save_animation(ani, os.path.join(tempfile.mkdtemp(), "hist.gif"), dpi=30)
    >>> os.path.basename(path)
    'hist.gif'
    """
    from matplotlib import animation

    if not isinstance(ani, animation.Animation):
        raise TypeError(f"ani must be a matplotlib.animation.Animation; got {type(ani).__name__}")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".gif":
        writer = animation.PillowWriter(fps=fps)
    elif ext == ".html":
        writer = animation.HTMLWriter(fps=fps, embed_frames=True, default_mode="loop")
    elif ext == ".mp4":
        if not animation.FFMpegWriter.isAvailable():
            where = shutil.which("ffmpeg") or "not found on PATH"
            raise RuntimeError(
                f"saving {os.path.basename(path)!r} as .mp4 needs ffmpeg (ffmpeg: {where}); install "
                "ffmpeg or save as .gif (Pillow) or .html instead"
            )
        writer = animation.FFMpegWriter(fps=fps)
    else:
        raise ValueError(
            f"path must end in one of {', '.join(_FORMATS)} to choose the format; got {path!r}"
        )
    # NOTE: a non-blitted animation asks the canvas to redraw after every frame
    # (for the screen) and the writer then renders the frame again into the
    # file; on Agg the first render is wasted work, as costly as the second.
    canvas = ani._fig.canvas
    own = vars(canvas).get("draw_idle")
    canvas.draw_idle = lambda *args, **kwargs: None
    try:
        ani.save(path, writer=writer, dpi=dpi)
    finally:
        if own is None:
            del canvas.draw_idle
        else:
            canvas.draw_idle = own
    if ext == ".html":
        _self_contained_html(path)
    return path
