"""The model picker and the import dialog: choose a shipped, fetched, taught or recent model; bring a
third-party ONNX classifier under the contract by answering what its file lacks."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from resnet_edge.catalog import ModelEntry, catalog
from resnet_edge.errors import UserError
from resnet_edge.importer import PRESETS, ImportPlan, build_contract, import_classifier, inspect_for_import

COLUMNS = ("model", "from", "classes", "precision", "accuracy", "file")


class ModelPicker(QDialog):
    """A table of every model found; Open, or the two ways to add one."""

    import_requested = Signal()  # "Import ONNX classifier..."
    fetch_requested = Signal()  # "Get ImageNet models..."

    def __init__(self, recent: list[str], extra_dirs: list[Path] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose a model")
        self.chosen: Path | None = None
        self.entries: list[ModelEntry] = catalog(recent, extra_dirs)
        self.table = QTableWidget(len(self.entries), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for row, entry in enumerate(self.entries):
            cells = (entry.name, entry.origin, "" if entry.classes is None else str(entry.classes), entry.precision,
                     entry.problem or entry.accuracy, str(entry.path))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(str(entry.path) if column == 5 else text)
                self.table.setItem(row, column, item)
        self.table.resizeColumnsToContents()
        self.table.doubleClicked.connect(lambda _index: self.accept_selected())
        buttons = QHBoxLayout()
        for text, slot in (("Get ImageNet models...", self.fetch_requested.emit),
                           ("Import ONNX classifier...", self.import_requested.emit),
                           ("Browse...", self._browse)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        buttons.addStretch(1)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self.accept_selected)
        box.rejected.connect(self.reject)
        buttons.addWidget(box)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        self.resize(860, 360)

    def select(self, path: Path) -> None:
        for row, entry in enumerate(self.entries):
            if entry.path.resolve() == Path(path).resolve():
                self.table.selectRow(row)

    def accept_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows and not self.entries[rows[0].row()].problem:
            self.chosen = self.entries[rows[0].row()].path
            self.accept()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "ONNX model", "", "ONNX models (*.onnx);;All files (*)")
        if path:
            self.chosen = Path(path)
            self.accept()


class ImportDialog(QDialog):
    """Shows what a third-party file lacks and asks for it (presets fill the usual values); writes a copy with
    our metadata to ``output`` and keeps its path in ``imported``."""

    def __init__(self, source: str | Path, output: str | Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import ONNX classifier")
        self.source, self.output = Path(source), Path(output)
        self.imported: Path | None = None
        self.plan: ImportPlan = inspect_for_import(self.source)  # raises UserError for files we refuse
        graph = (f"{self.plan.classes} outputs" if self.plan.classes else "outputs of unknown size") + (
            f", input {self.plan.input_size[0]}x{self.plan.input_size[1]}" if self.plan.input_size else ", input size not fixed")
        lacks = ", ".join(self.plan.missing) or "nothing"
        self.summary = QLabel(f"<b>{self.source.name}</b>: {graph}. Its file lacks: {lacks}.")
        self.summary.setWordWrap(True)
        self.preset = QComboBox()
        self.preset.addItems(["(none)", *PRESETS])
        self.labels = QLineEdit()
        self.labels.setPlaceholderText("imagenet, cifar10, a labels .txt file, or a,b,c")
        browse = QPushButton("...")
        browse.clicked.connect(self._browse_labels)
        labels_row = QHBoxLayout()
        labels_row.addWidget(self.labels)
        labels_row.addWidget(browse)
        self.mean, self.std = QLineEdit(), QLineEdit()
        self.size = QSpinBox()
        self.size.setRange(8, 1024)
        self.size.setValue(self.plan.input_size[0] if self.plan.input_size else 224)
        self.size.setEnabled(self.plan.input_size is None)  # the graph's own size cannot be overridden
        self.crop = QDoubleSpinBox()
        self.crop.setRange(0.1, 1.0)
        self.crop.setSingleStep(0.025)
        self.crop.setDecimals(3)
        self.color = QComboBox()
        self.color.addItems(["RGB", "BGR"])
        self.error = QLabel("")
        self.error.setStyleSheet("color: #c0392b")
        self.error.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Preset", self.preset)
        form.addRow("Labels", labels_row)
        form.addRow("Mean (0..1, 3 values)", self.mean)
        form.addRow("Std (0..1, 3 values)", self.std)
        form.addRow("Input size", self.size)
        form.addRow("Centre crop ratio", self.crop)
        form.addRow("Colour order", self.color)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self.try_import)
        box.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(box)
        self.preset.currentTextChanged.connect(self._apply_preset)
        self._fill(self.plan.present)

    def _fill(self, values: dict) -> None:
        if "mean" in values:
            self.mean.setText(", ".join(f"{v:g}" for v in values["mean"]))
        if "std" in values:
            self.std.setText(", ".join(f"{v:g}" for v in values["std"]))
        if "input_size" in values and self.size.isEnabled():
            self.size.setValue(int(values["input_size"][0]))
        if "resize" in values:
            self.crop.setValue(float(values["resize"].get("crop_ratio", 1.0)))
        if "color_order" in values:
            self.color.setCurrentText(values["color_order"])
        if isinstance(values.get("labels"), str):
            self.labels.setText(values["labels"])

    def _apply_preset(self, name: str) -> None:
        if name in PRESETS:
            self._fill(PRESETS[name])

    def _browse_labels(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Labels file", "", "Text files (*.txt);;All files (*)")
        if path:
            self.labels.setText(path)

    def _numbers(self, field: QLineEdit, name: str) -> list[float]:
        try:
            values = [float(part) for part in field.text().replace(",", " ").split()]
        except ValueError:
            values = []
        if len(values) != 3:
            raise UserError(f"{name}: give 3 numbers on the 0..1 scale")
        return values

    def try_import(self) -> bool:
        """Build the contract from the form; on a mistake say it in the dialog and stay open."""
        try:
            side = self.size.value()
            overrides = {"mean": self._numbers(self.mean, "mean"), "std": self._numbers(self.std, "std"),
                         "color_order": self.color.currentText(), "input_size": [side, side],
                         "resize": {"policy": "center_crop", "crop_ratio": round(self.crop.value(), 4)}}
            preset = self.preset.currentText() if self.preset.currentText() in PRESETS else None
            contract = build_contract(self.plan, preset=preset, labels=self.labels.text().strip() or None,
                                      overrides=overrides)
            self.imported = import_classifier(self.source, self.output, contract)
        except UserError as error:
            self.error.setText(str(error))
            return False
        self.accept()
        return True


def imported_name(source: Path, folder: Path) -> Path:
    """Where an imported copy goes: the user's model folder, the source's name, never over another file."""
    stem = source.name[:-5] if source.name.endswith(".onnx") else source.stem
    candidate = folder / f"{stem}.onnx"
    index = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{index}.onnx"
        index += 1
    return candidate


__all__ = ["ImportDialog", "ModelPicker", "imported_name"]
