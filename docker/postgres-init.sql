-- Databases of the local topology (same set as the no-Docker stack).
CREATE DATABASE crm;
CREATE DATABASE psa;
CREATE DATABASE erp;
CREATE DATABASE target;
CREATE DATABASE registry;
