"""Evaluator nodes: metrics, reports and pictures of trained models."""
