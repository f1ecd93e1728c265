"""What every long run stands on: the run folder and its resume logic (:mod:`.resumable`), the
metrics log (:mod:`.runlog`), progress lines (:mod:`.feedback`), devices, DDP, seeds and RNG
state (:mod:`.runtime`), and mixed precision (:mod:`.precision`). The search and the retrain
build their runs from these; nothing here imports them. Importing the package loads nothing."""
