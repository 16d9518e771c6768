"""Datasets: raw readers (VOC, ADE20K, toy), the per-step incremental dataset, transforms."""
from cslearn.data.ade import ADE_CLASSES, ADE20KSegmentation
from cslearn.data.errors import DatasetError
from cslearn.data.incremental import IncrementalSegmentation, label_sets
from cslearn.data.toy import TOY_CLASSES, ToySegmentation
from cslearn.data.transforms import eval_transform, train_transform
from cslearn.data.voc import VOC_CLASSES, VOCSegmentation

__all__ = ["ADE_CLASSES", "ADE20KSegmentation", "DatasetError", "IncrementalSegmentation", "label_sets",
           "TOY_CLASSES", "ToySegmentation", "eval_transform", "train_transform", "VOC_CLASSES",
           "VOCSegmentation"]
