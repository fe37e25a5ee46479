"""The options that name and select a uni-modal source, shared by ``train-cvae`` and ``pair``."""

from __future__ import annotations

from typing import Annotated

import typer

from mmgen.data.sources import SOURCES

SOURCE_HELP = (
    f"{', '.join(SOURCES)}; or idx:FOLDER (the four MNIST IDX files), folder:PATH "
    "(PATH/{train,test}/<class>/*.png) or npz:FILE (x_train, y_train, x_test, y_test). "
    "See docs/sources.md."
)
CLASSES_HELP = (
    "Keep only these classes, in this order, relabelled 0..K-1: names or indices separated by "
    "commas, e.g. 0,1,2 or a,b,c."
)
DownloadOption = Annotated[
    bool,
    typer.Option(
        help="Download missing files through torchvision (its URLs and MD5s) into the user cache.",
    ),
]
ClassesOption = Annotated[str | None, typer.Option("--classes", help=CLASSES_HELP)]
PairClassesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--classes",
        help=CLASSES_HELP + " Give it once for every source, or once per --source, in order.",
    ),
]
