"""Listing the image files of a `folder:PATH` source, labelled by class sub-folder if it has any.

Symbolic links are followed, but every real directory is walked and every real file listed once
(by device and inode), so a link loop cannot multiply the images and one file cannot carry two
labels.
"""

import os

import numpy as np

from carl_tf.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def list_images(spec: str, root: str) -> tuple[list[str], np.ndarray, tuple[str, ...] | None]:
    """Lists the image files under `root`, labelled by class sub-folder when there are any.

    Symbolic links are followed, but each real directory is walked once per class folder and
    each real file listed once, so a link loop (`a/self -> .`) cannot multiply the images.

    Returns:
        Sorted file paths, their labels (-1 when unlabelled) and the class names or None.

    Raises:
        DataError: If `root` is missing, holds no images, mixes loose images with class
            folders, or reaches one file from two class folders (its label is ambiguous).
    """
    if not os.path.isdir(root):
        raise DataError(f"{spec}: no such directory; pass an existing folder as folder:PATH")
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    loose = [
        os.path.join(root, e)
        for e in entries
        if e.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(root, e))
    ]
    labelled = {}  # (st_dev, st_ino) of each file listed -> (class folder, path)
    classes = {
        e: files
        for e in entries
        if os.path.isdir(os.path.join(root, e))
        and (files := _class_images(spec, e, os.path.join(root, e), labelled))
    }
    if not classes:
        if not loose:
            raise DataError(
                f"{spec} holds no JPEG, PNG, BMP or GIF images; point folder:PATH at an image "
                "folder"
            )
        return loose, np.full(len(loose), -1, np.int32), None
    if loose:
        raise DataError(
            f"{spec} mixes {len(loose)} loose images with class folders; move them into a "
            "class folder or remove them"
        )
    paths = [p for files in classes.values() for p in files]
    labels = np.concatenate(
        [np.full(len(files), i, np.int32) for i, files in enumerate(classes.values())]
    )
    return paths, labels, tuple(classes)


def os_names(paths: list[str]) -> list[bytes]:
    """The paths as the bytes the filesystem holds, for tf.data to open.

    `os.listdir` gives a name that is not valid UTF-8 (b"\\xff.png") as a str with surrogate
    escapes ("\\udcff.png"), which TensorFlow refuses to convert ("Error converting unicode
    string"); its bytes open the file like any other.
    """
    return [os.fsencode(path) for path in paths]


def _identity(path: str) -> tuple[int, int]:
    """The (device, inode) that names the real file or directory behind `path` and its links."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _class_images(
    spec: str, label: str, directory: str, labelled: dict[tuple[int, int], tuple[str, str]]
) -> list[str]:
    """The image files under one class folder, each real directory and file taken once.

    Args:
        spec: The source's spec, for messages.
        label: The class folder's name.
        directory: Its path.
        labelled: (device, inode) of every file listed so far, shared by all class folders,
            mapped to its class folder and path; updated with this folder's files.

    Raises:
        DataError: If a file here is the same real file as one listed under another class.
    """
    found = []
    walked = {_identity(directory)}
    for parent, dirs, files in os.walk(directory, followlinks=True):
        # Hidden folders are tool state (.ipynb_checkpoints, .cache), not data; a directory
        # already walked (a link loop, or two links to one folder) is not walked again.
        kept = []
        for name in sorted(d for d in dirs if not d.startswith(".")):
            identity = _identity(os.path.join(parent, name))
            if identity not in walked:
                walked.add(identity)
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(parent, name)
            try:
                identity = _identity(path)
            except OSError:  # a dangling link: listed, and reported as undecodable when read
                found.append(path)
                continue
            if identity in labelled:
                other_label, other = labelled[identity]
                if other_label != label:
                    raise DataError(
                        f"{spec}: {path} is the same file as {other}, so it has two labels "
                        f"({other_label!r} and {label!r}); remove one of the links"
                    )
                continue  # the same image linked twice in one class counts once
            labelled[identity] = (label, path)
            found.append(path)
    return found
