-- Placeholder so that this branch's 0010 applies: number 0009 belongs to the command-queue branch
-- (sec-http). When the branches merge, delete this file and keep that branch's 0009.
select 1;
